"""The standalone checker reads a hostile bundle with the limits of `evidence verify` (#25): regular files
only, bounded sizes, a malformed manifest one FAILED line; both checkers give the same verdict, one line,
no traceback, in bounded time and memory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from ledger.signing import SIGNING_ENV
from reports import check_bundle

CHECKER = Path(__file__).resolve().parent.parent / "reports" / "check_bundle.py"
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHAPE = {"events": 300, "users": 8, "tenants": 2, "roles": 4, "assignments": 20, "days": 30}
TIMEOUT = 30  # the standalone checker; a hostile bundle must not make it read for ever
CLI_TIMEOUT = 120  # access-ledger's own start-up on a busy machine
MEMORY = 512 << 20


def _limit_memory() -> None:
    """The standalone checker (standard library only) runs within 1 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY * 2, MEMORY * 2))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    db = root / "ledger.db"
    with AccessLedger.open(str(db), create=True) as led:
        led.import_lines(generate("large", END, **SHAPE).lines())
    out = root / "bundle"
    done = _cli("--db", str(db), "evidence", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, SIGNING_ENV: ""}
    # No address-space limit here: duckdb and pyarrow map far more than they use.
    return subprocess.run(
        [str(Path(sys.executable).with_name("access-ledger")), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
        check=False,
    )


def checker(target: Path) -> subprocess.CompletedProcess[str]:
    """The standalone checker as an auditor runs it: isolated, its own copy, never the bundle's."""
    return subprocess.run(
        [sys.executable, "-I", str(CHECKER), str(target)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
        check=False,
    )


def verdicts(target: Path) -> tuple[int, int]:
    """(standalone exit, `evidence verify` exit); each failure one line ending stderr, no traceback."""
    a, b = checker(target), _cli("evidence", "verify", str(target))
    for done in (a, b):
        assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
        if done.returncode != 0:
            assert done.stderr.strip().splitlines()[-1].startswith(("FAILED", "Error")), done.stderr
    return a.returncode, b.returncode


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    return target


def test_a_genuine_bundle_passes_both(bundle):
    assert verdicts(bundle) == (0, 0)


@pytest.mark.parametrize("member", ["report.html", "events/events.jsonl"])
def test_a_member_symlinked_to_dev_zero_is_refused_at_once_by_both(bundle, tmp_path, member):
    target = _copy(bundle, tmp_path)
    (target / member).unlink()
    os.symlink("/dev/zero", target / member)
    assert verdicts(target) == (1, 1)
    assert "not a regular file" in checker(target).stderr


def test_a_fifo_member_is_refused_at_once_by_both(bundle, tmp_path):
    target = _copy(bundle, tmp_path)
    (target / "report.html").unlink()
    os.mkfifo(target / "report.html")
    assert verdicts(target) == (1, 1)


def test_a_member_longer_than_listed_is_refused_without_reading_it_all(bundle, tmp_path):
    target = _copy(bundle, tmp_path)
    with open(target / "report.html", "ab") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that cost nothing to write, a lot to read
    assert verdicts(target) == (1, 1)


def _zip(bundle: Path, out: Path, manifest_size: int | None = None) -> Path:
    """The bundle as a zip; with `manifest_size`, a manifest.json of that many spaces (deflated)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(bundle.rglob("*")):
            name = path.relative_to(bundle).as_posix()
            if path.is_file() and not (name == "manifest.json" and manifest_size is not None):
                z.write(path, name)
        if manifest_size is not None:
            with z.open("manifest.json", "w", force_zip64=True) as f:
                block = b" " * (1 << 20)
                for _ in range(manifest_size // len(block)):
                    f.write(block)
    return out


def test_a_zip_whose_manifest_inflates_to_2_gib_is_refused_without_reading_it(bundle, tmp_path):
    target = _zip(bundle, tmp_path / "b.zip", manifest_size=2 << 30)
    assert verdicts(target) == (1, 1)
    done = checker(target)
    assert len(done.stderr.strip().splitlines()) == 1 and "manifest.json" in done.stderr, done.stderr


def test_a_zip_bundle_passes_both(bundle, tmp_path):
    assert verdicts(_zip(bundle, tmp_path / "b.zip")) == (0, 0)


WRONG_TYPES = [
    ("files", 5),
    ("files", ["report.html"]),
    ("files", {"report.html": 5}),
    ("files", {"report.html": ["sha"]}),
    ("files", {"report.html": {"sha256": 7, "bytes": 1}}),
    ("files", {"report.html": {"sha256": "0" * 64, "bytes": "12"}}),
    ("files", {"../x": {"sha256": "0" * 64, "bytes": 1}}),
    ("period", ["a"]),
    ("chain", 3),
    (
        "chain",
        {"first_position": [1], "last_position": {}, "topic_prefix": 1, "usage_stream_prefix": 2, "start_link": None},
    ),
    ("signature", "x"),
    (None, [1, 2]),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(WRONG_TYPES)])
def test_a_manifest_entry_of_the_wrong_type_is_one_failed_line_in_both(bundle, tmp_path, key, value):
    target = _copy(bundle, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    if key is None:
        manifest = value
    elif key == "files" and isinstance(value, dict):
        manifest["files"].update(value)
    else:
        manifest[key] = value
    (target / "manifest.json").write_text(json.dumps(manifest))
    assert verdicts(target) == (1, 1)
    assert checker(target).stderr.strip().splitlines()[-1].startswith("FAILED")


# -- fuzz: the same hostile bundles to both checkers ------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
MEMBERS = ["report.html", "events/events.jsonl", "events/chain.jsonl", "check_bundle.py"]
MANIFEST_PATHS = [
    ("format",),
    ("files",),
    ("chain",),
    ("period",),
    ("signature",),
    ("audits",),
    ("chain", "first_position"),
    ("chain", "last_position"),
    ("chain", "start_link"),
    ("chain", "end_link"),
    ("chain", "topic_prefix"),
    ("period", "coverage"),
    ("period", "complete"),
    *(("files", m) for m in MEMBERS),
    *(("files", m, k) for m in MEMBERS for k in ("sha256", "bytes")),
]
MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(MANIFEST_PATHS), JSON_VALUES),
    st.tuples(st.just("drop"), st.sampled_from(MANIFEST_PATHS), st.none()),
    st.tuples(st.just("remove"), st.sampled_from(MEMBERS), st.none()),
    st.tuples(
        st.just("add"), st.sampled_from(["extra.txt", "events/x.jsonl", "reviews/a.json"]), st.binary(max_size=9)
    ),
    st.tuples(st.just("symlink"), st.sampled_from(MEMBERS), st.sampled_from(["/dev/zero", "/etc/hostname", "."])),
    st.tuples(st.just("fifo"), st.sampled_from(MEMBERS), st.none()),
    st.tuples(st.just("grow"), st.sampled_from(MEMBERS), st.integers(1, 3 << 30)),
    st.tuples(st.just("flip"), st.sampled_from(MEMBERS), st.integers(0, 200)),
)


def _mutate(target: Path, how: str, what, value) -> None:
    manifest_path = target / "manifest.json"
    if how in ("set", "drop"):
        manifest = json.loads(manifest_path.read_text())
        node = manifest
        for key in what[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if how == "set":
                node[what[-1]] = value
            else:
                node.pop(what[-1], None)
        manifest_path.write_text(json.dumps(manifest))
    elif how == "add":
        (target / what).parent.mkdir(exist_ok=True)
        (target / what).write_bytes(value)
    else:
        member = target / what
        if not member.is_file() or member.is_symlink():
            return  # removed or replaced by an earlier mutation
        if how == "grow":
            with open(member, "ab") as f:
                f.truncate(member.stat().st_size + value)
        elif how == "flip":
            data = bytearray(member.read_bytes())
            data[value % len(data)] ^= 0x20
            member.write_bytes(bytes(data))
        else:
            member.unlink()
            if how == "symlink":
                os.symlink(value, member)
            elif how == "fifo":
                os.mkfifo(member)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3), as_zip=st.booleans())
# The attacks of #25, always tried: a listed entry of the wrong type, a FIFO, a symlink to /dev/zero.
@example(mutations=[("set", ("files", "report.html"), 5)], as_zip=True)
@example(mutations=[("fifo", "report.html", None)], as_zip=False)
@example(mutations=[("symlink", "events/events.jsonl", "/dev/zero")], as_zip=False)
@example(mutations=[("drop", ("chain",), None)], as_zip=False)  # a bundle of an earlier version: a note in both
def test_both_checkers_give_the_same_verdict_on_hostile_bundles(bundle, tmp_path_factory, mutations, as_zip):
    target = _copy(bundle, tmp_path_factory.mktemp("fuzz"))
    for how, what, value in mutations:
        _mutate(target, how, what, value)
    if as_zip and not any(how in ("symlink", "fifo", "grow") for how, _, _ in mutations):
        target = _zip(target, target.with_suffix(".zip"))
    standalone, verify = verdicts(target)
    assert (standalone == 0) == (verify == 0), (mutations, standalone, verify)


# -- the auditor's checker comes from outside the bundle ---------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_publishes_the_sha256_of_this_checker():
    published = re.findall(r"^    ([0-9a-f]{64})$", README.read_text(), re.MULTILINE)
    assert published == [hashlib.sha256(CHECKER.read_bytes()).hexdigest()]


def test_evidence_checker_writes_this_versions_checker_and_prints_its_sha256(tmp_path):
    out = tmp_path / "checker.py"
    done = _cli("evidence", "checker", "--out", str(out))
    assert done.returncode == 0, done.stderr
    sha = hashlib.sha256(CHECKER.read_bytes()).hexdigest()
    assert out.read_bytes() == CHECKER.read_bytes() and sha in done.stdout and "python3 -I" in done.stdout
    again = _cli("evidence", "checker", "--out", str(out))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    assert out.read_bytes() == CHECKER.read_bytes()


def test_the_manifest_records_the_checkers_sha256_and_the_report_says_run_an_independent_one_isolated(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["checker"]["sha256"] == hashlib.sha256(CHECKER.read_bytes()).hexdigest()
    assert "checker" in check_bundle.signed_bytes(manifest).decode()  # covered by the signature
    report = (bundle / "report.html").read_text()
    assert "evidence checker --out" in report and "python3 -I" in report
    assert "python3 check_bundle.py" not in report and "python3 check_bundle.py" not in README.read_text()
    assert "check_bundle.py q1" not in README.read_text()  # the tour never runs a bundle's own copy


def test_a_manifest_with_a_checker_entry_of_the_wrong_type_fails_both(bundle, tmp_path):
    target = _copy(bundle, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["checker"] = "trust me"
    (target / "manifest.json").write_text(json.dumps(manifest))
    assert verdicts(target) == (1, 1)
