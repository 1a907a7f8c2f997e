"""Evidence an auditor can check without trusting whoever exported it (#16): Ed25519 keys, signed seals
and digests, bundles that carry their chain, `evidence verify --digest/--public-key/--after`, and the
standalone checker inside every bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from ledger.signing import SIGNING_ENV, check, digest_message, load_public_key

runner = CliRunner()
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHAPE = dict(events=1_500, users=20, tenants=3, roles=8, assignments=80, days=90)
SPLIT = "2026-01-15T00:00:00Z"


def _run(*args: str, key: Path | None = None):
    env = {SIGNING_ENV: str(key)} if key is not None else {SIGNING_ENV: ""}
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys") / "k"
    result = _run("keys", "create", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def signed(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ledger written with the signing key; its digest; bundles: all of history, before SPLIT, after it."""
    root = tmp_path_factory.mktemp("signed")
    db = root / "ledger.db"
    os.environ[SIGNING_ENV] = str(keys / "signing.key")
    try:
        with AccessLedger.open(str(db), create=True) as led:
            led.import_lines(generate("large", END, **SHAPE).lines())
    finally:
        del os.environ[SIGNING_ENV]
    out = {"db": db, "digest": root / "digest.json"}
    key = keys / "signing.key"
    assert _run("--db", str(db), "digest", "--out", str(out["digest"]), key=key).exit_code == 0
    for name, period in (("all", []), ("q1", ["--to", SPLIT]), ("q2", ["--from", SPLIT])):
        out[name] = root / name
        result = _run("--db", str(db), "evidence", "export", *period, "--out", str(out[name]), key=key)
        assert result.exit_code == 0, result.output
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / bundle.name
    shutil.copytree(bundle, target)
    return target


def _rehash(bundle: Path, *names: str) -> None:
    """What an insider does after editing files: the manifest's hashes made to match again."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in names:
        data = (bundle / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _edit_event(bundle: Path, line: int) -> int:
    """Change the actor of the event on `line` (1-based) of events.jsonl; return its position."""
    path = bundle / "events" / "events.jsonl"
    lines = path.read_bytes().split(b"\n")
    event = json.loads(lines[line - 1])
    event["actor"] = "user:mallory"
    lines[line - 1] = json.dumps(event, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines))
    return json.loads((bundle / "manifest.json").read_text())["chain"]["first_position"] + line - 1


def _verify(bundle: Path, *anchors: str):
    return _run("evidence", "verify", str(bundle), *anchors)


# -- keys, seals, digests ----------------------------------------------------------------------


def test_keys_create_writes_an_owner_only_private_key_and_a_public_key(tmp_path):
    old = os.umask(0o022)
    try:
        result = _run("keys", "create", "--out", str(tmp_path / "k"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "k" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in (tmp_path / "k" / "signing.key").read_bytes()
    load_public_key(tmp_path / "k" / "signing.pub")
    before = (tmp_path / "k" / "signing.key").read_bytes()
    again = _run("keys", "create", "--out", str(tmp_path / "k"))
    assert again.exit_code != 0 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    assert (tmp_path / "k" / "signing.key").read_bytes() == before


def test_seals_are_signed_a_stripped_signature_is_said_and_a_foreign_one_fails_verify(
    signed, keys, tmp_path, monkeypatch
):
    db = tmp_path / "ledger.db"
    shutil.copy(signed["db"], db)
    with sqlite3.connect(db) as con:
        macs = [m for (m,) in con.execute("SELECT mac FROM al_seals")]
    assert macs and all(m.startswith("ed25519:") for m in macs)
    monkeypatch.setenv(SIGNING_ENV, str(keys / "signing.key"))
    assert AccessLedger.open(str(db)).verify().ok
    with sqlite3.connect(db) as con:
        first = con.execute("SELECT min(position) FROM al_seals").fetchone()[0]
        con.execute("UPDATE al_seals SET mac = NULL WHERE position = ?", (first,))
    # A seal without a signature is what a ledger written before the key was set holds: said, not failed
    # (with the seal key set, a stripped seal also lost its HMAC, and fails).
    result = AccessLedger.open(str(db)).verify()
    assert result.ok and any("1 seal(s) carry no Ed25519 signature" in n for n in result.notes)
    # Re-signed by another key: wrong.
    other = tmp_path / "other"
    assert _run("keys", "create", "--out", str(other)).exit_code == 0
    monkeypatch.setenv(SIGNING_ENV, str(other / "signing.key"))
    from ledger.signing import seal_signature

    link = sqlite3.connect(db).execute("SELECT link FROM al_seals WHERE position = ?", (first,)).fetchone()[0]
    forged = seal_signature(first, link)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE al_seals SET mac = ? WHERE position = ?", (forged, first))
    monkeypatch.setenv(SIGNING_ENV, str(keys / "signing.key"))
    result = AccessLedger.open(str(db)).verify()
    assert not result.ok and result.first_bad == first and "does not match" in result.problem


def test_a_signed_digest_verifies_and_an_edited_one_does_not(signed, keys):
    digest = json.loads(signed["digest"].read_text())
    public = load_public_key(keys / "signing.pub")
    assert check(digest_message(digest), digest["signature"], public) is None
    result = _run(
        "--db", str(signed["db"]), "verify", "--quick", "--digest", str(signed["digest"]), key=keys / "signing.key"
    )
    assert result.exit_code == 0, result.output
    assert "digest at position" in result.stdout
    digest["position"] -= 1
    assert check(digest_message(digest), digest["signature"], public) is not None


# -- bundles -----------------------------------------------------------------------------------


def test_a_signed_bundle_verifies_against_each_anchor(signed, keys):
    manifest = json.loads((signed["all"] / "manifest.json").read_text())
    assert {"events/chain.jsonl", "check_bundle.py"} <= set(manifest["files"])
    assert manifest["signature_ed25519"]["algorithm"] == "Ed25519"
    result = _verify(signed["all"], "--digest", str(signed["digest"]), "--public-key", str(keys / "signing.pub"))
    assert result.exit_code == 0, result.output
    assert "nothing outside the bundle vouches" not in result.stdout
    digest = json.loads(signed["digest"].read_text())
    assert f"note: position {digest['position']:,} matches the digest {signed['digest']}\n" in result.stdout
    plain = _verify(signed["all"])
    assert plain.exit_code == 0 and "note: nothing outside the bundle vouches for it" in plain.stdout


def test_an_edited_event_with_the_manifest_rehashed_fails_both_anchors_naming_the_event(signed, keys, tmp_path):
    bundle = _copy(signed["all"], tmp_path)
    position = _edit_event(bundle, 40)
    _rehash(bundle, "events/events.jsonl")
    for anchor in (["--digest", str(signed["digest"])], ["--public-key", str(keys / "signing.pub")]):
        result = _verify(bundle, *anchor)
        assert result.exit_code == 1, result.output
        assert f"the event at position {position} (line 40 of events/events.jsonl)" in result.stdout + result.stderr
        assert "Traceback" not in result.output
    signature = _verify(bundle, "--public-key", str(keys / "signing.pub"))
    assert "signature does not match" in signature.stdout + signature.stderr


def test_events_and_chain_rewritten_together_are_caught_by_the_anchors(signed, keys, tmp_path):
    """The insider recomputes the chain file and the manifest's end link too: only an anchor catches it."""
    from reports.check_bundle import link

    bundle = _copy(signed["all"], tmp_path)
    _edit_event(bundle, 40)
    manifest = json.loads((bundle / "manifest.json").read_text())
    meta = manifest["chain"]
    states = (bundle / "events" / "events.jsonl").read_bytes().split(b"\n")[:-1]
    entries = [json.loads(e) for e in (bundle / "events" / "chain.jsonl").read_text().splitlines()]
    current, out = meta["start_link"], []
    for i, (state, entry) in enumerate(zip(states, entries)):
        pos = meta["first_position"] + i
        oid, ver = (entry[1], entry[2]) if len(entry) > 1 else (f"{meta['usage_stream_prefix']}{pos:016x}", 1)
        current = link(current, pos, oid, ver, meta["topic_prefix"] + json.loads(state)["type"], state)
        out.append(json.dumps([current[:16], *entry[1:]]))
    (bundle / "events" / "chain.jsonl").write_text("\n".join(out) + "\n")
    manifest["chain"]["end_link"] = current
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rehash(bundle, "events/events.jsonl", "events/chain.jsonl")
    assert _verify(bundle).exit_code == 0  # nothing inside the bundle can tell
    by_digest = _verify(bundle, "--digest", str(signed["digest"]))
    assert by_digest.exit_code == 1 and "does not match the digest" in by_digest.stdout + by_digest.stderr
    by_key = _verify(bundle, "--public-key", str(keys / "signing.pub"))
    assert by_key.exit_code == 1 and "signature does not match" in by_key.stdout + by_key.stderr


def test_a_removed_signature_fails_with_the_public_key(signed, keys, tmp_path):
    bundle = _copy(signed["all"], tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["signature_ed25519"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = _verify(bundle, "--public-key", str(keys / "signing.pub"))
    assert result.exit_code == 1
    assert "manifest.json carries no Ed25519 signature" in result.stdout + result.stderr


def test_a_removed_hmac_signature_fails_when_the_seal_key_is_set(signed, monkeypatch):
    from reports.bundle_chain import check_anchors
    from reports.evidence import verify_bundle

    manifest = json.loads((signed["all"] / "manifest.json").read_text())
    assert "signature" not in manifest  # exported without the seal key
    monkeypatch.setenv("ACCESS_LEDGER_SEAL_KEY", "auditor-secret")
    problems, _ = check_anchors(signed["all"], manifest, verify=verify_bundle)
    assert problems == [
        "manifest.json carries no HMAC signature, but ACCESS_LEDGER_SEAL_KEY is set (removed, or made without the key)"
    ]


def test_a_digest_later_than_the_bundle_cannot_vouch_for_it(signed):
    result = _verify(signed["q1"], "--digest", str(signed["digest"]))
    assert result.exit_code == 1
    assert "cannot vouch for this bundle unless the events in between are given" in result.stdout + result.stderr


def test_after_accepts_the_next_quarter_and_catches_a_gap_and_an_overlap(signed, tmp_path):
    ok = _verify(signed["q2"], "--after", str(signed["q1"]))
    assert ok.exit_code == 0, ok.output
    ended = json.loads((signed["q1"] / "manifest.json").read_text())["chain"]["last_position"]
    assert f"note: starts where {signed['q1']} ended: position {ended:,} and its link\n" in ok.stdout
    overlap = _verify(signed["all"], "--after", str(signed["q1"]))
    assert overlap.exit_code == 1 and "overlap with" in overlap.stderr
    later = tmp_path / "later"
    assert (
        _run(
            "--db", str(signed["db"]), "evidence", "export", "--from", "2026-02-01T00:00:00Z", "--out", str(later)
        ).exit_code
        == 0
    )
    gap = _verify(later, "--after", str(signed["q1"]))
    assert gap.exit_code == 1 and "gap after" in gap.stderr and "are in neither" in gap.stderr


def test_a_zip_bundle_verifies_against_the_public_key(signed, keys, tmp_path):
    out = tmp_path / "all.zip"
    result = _run("--db", str(signed["db"]), "evidence", "export", "--zip", "--out", str(out), key=keys / "signing.key")
    assert result.exit_code == 0, result.output
    verified = _verify(out, "--public-key", str(keys / "signing.pub"), "--digest", str(signed["digest"]))
    assert verified.exit_code == 0, verified.output


# -- the standalone checker --------------------------------------------------------------------


def _checker(bundle: Path, *args: str, no_site: bool = False) -> subprocess.CompletedProcess[str]:
    """check_bundle.py run isolated (-I: no PYTHONPATH, no current folder; -S also without site-packages,
    so without `cryptography`: the signature is then checked by openssl), from an empty folder."""
    flags = ["-I", "-S"] if no_site else ["-I"]
    return subprocess.run(
        [sys.executable, *flags, str(bundle / "check_bundle.py"), str(bundle), *args],
        capture_output=True,
        text=True,
        cwd=bundle.parent,
        timeout=120,
    )


def test_the_standalone_checker_passes_a_real_bundle_and_names_an_edited_event(signed, keys, tmp_path):
    pub = str(keys / "signing.pub")
    done = _checker(signed["all"], "--public-key", pub, "--digest", str(signed["digest"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK:")
    if shutil.which("openssl"):
        assert _checker(signed["all"], "--public-key", pub, no_site=True).returncode == 0
    # It imports the standard library only (cryptography optional, for the signature).
    import ast

    tree = ast.parse((signed["all"] / "check_bundle.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}
    bundle = _copy(signed["all"], tmp_path)
    position = _edit_event(bundle, 7)
    _rehash(bundle, "events/events.jsonl")
    failed = _checker(bundle, "--public-key", pub)
    assert failed.returncode == 1
    assert f"the event at position {position} (line 7 of events/events.jsonl)" in failed.stderr
    assert "signature does not match" in failed.stderr
    if shutil.which("openssl"):
        assert "signature does not match" in _checker(bundle, "--public-key", pub, no_site=True).stderr


def test_the_checker_refuses_unknown_options_and_prints_its_usage(signed, keys):
    """A typo of an anchor must not pass as an unanchored OK (#24 item 9)."""
    pub = str(keys / "signing.pub")
    for wrong in (["--publickey", pub], ["--bogus", "x"], ["--digest"]):
        done = _checker(signed["all"], *wrong)
        assert done.returncode == 2, (wrong, done.stdout, done.stderr)
        assert "OK" not in done.stdout and "usage:" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-I", str(signed["all"] / "check_bundle.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage:")
    for option in ("--public-key", "--digest", "--after"):
        assert option in helped.stdout


def _both(bundle: Path, *anchors: str) -> tuple[int, int, list[str], str]:
    """evidence verify's and the standalone checker's exit codes, verify's problem lines, the checker's stderr."""
    verified = _verify(bundle, *anchors)
    checked = _checker(bundle, *anchors)
    problems = [
        line.removeprefix("problem: ")
        for line in verified.stdout.splitlines()
        if line.startswith(("problem: ", "changed: ", "missing: ", "added: "))
    ]
    return verified.exit_code, checked.returncode, problems, checked.stderr


def test_the_checker_gives_evidence_verifys_verdict_for_after_and_digest(signed, keys, tmp_path):
    """--after and --digest: same exit code from both checkers, and each problem evidence verify names is
    named by check_bundle.py too."""
    later = tmp_path / "later"
    assert (
        _run(
            "--db", str(signed["db"]), "evidence", "export", "--from", "2026-02-01T00:00:00Z", "--out", str(later)
        ).exit_code
        == 0
    )
    rewritten = _copy(signed["all"], tmp_path)
    _edit_event(rewritten, 40)
    _rehash(rewritten, "events/events.jsonl")
    digest, pub = str(signed["digest"]), str(keys / "signing.pub")
    cases = [
        (signed["q2"], ["--after", str(signed["q1"])], 0),
        (signed["all"], ["--after", str(signed["q1"])], 1),  # overlap
        (later, ["--after", str(signed["q1"])], 1),  # gap
        (signed["q2"], ["--after", str(rewritten)], 1),  # the previous bundle is itself broken
        (signed["all"], ["--digest", digest], 0),
        (signed["q1"], ["--digest", digest], 1),  # the digest is later than the bundle
        (rewritten, ["--digest", digest], 1),
        (signed["q2"], ["--after", str(signed["q1"]), "--digest", digest, "--public-key", pub], 0),
    ]
    for bundle, anchors, expected in cases:
        verify_code, checker_code, problems, stderr = _both(bundle, *anchors)
        assert (verify_code, checker_code) == (expected, expected), (bundle, anchors, problems, stderr)
        for problem in problems:
            assert problem in stderr, (anchors, problem, stderr)
    missing = _checker(signed["all"], "--digest", str(tmp_path / "nope.json"))
    assert missing.returncode == _verify(signed["all"], "--digest", str(tmp_path / "nope.json")).exit_code == 2
    assert "Traceback" not in missing.stderr


def test_with_the_public_key_both_checkers_name_the_signer_and_recompute_passes(signed, keys):
    """A signed bundle: what is not checked against the events is vouched for by the signer, both checkers
    say; --recompute checks it against the events all the same."""
    pub = str(keys / "signing.pub")
    by = f"vouched for by the signer of manifest.json ({pub})"
    result = _verify(signed["all"], "--public-key", pub)
    assert result.exit_code == 0, result.output
    assert "note: audits/* (CSV, Parquet, JSON), charts/*.csv, events/events.parquet, report.html, the counts in " in (
        result.stdout
    )
    assert by in result.stdout and "nothing but the SHA-256 the exporter wrote" not in result.stdout
    done = _checker(signed["all"], "--public-key", pub)
    assert done.returncode == 0, done.stderr
    assert by in done.stdout and "access-ledger evidence verify --recompute (this checker cannot)" in done.stdout
    recomputed = _verify(signed["all"], "--public-key", pub, "--recompute")
    assert recomputed.exit_code == 0, recomputed.output
    events = json.loads((signed["all"] / "manifest.json").read_text())["period"]["events"]
    assert f"note: recomputed from the bundle's {events:,} events: " in recomputed.stdout
