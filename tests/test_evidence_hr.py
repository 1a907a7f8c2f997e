"""`evidence export --hr FILE` (the leavers audit inside the bundle, the HR file copied and its SHA-256 in the
manifest) and filtered exports (`--tenant/--principal/--connector/--role`): what both checkers and
`evidence verify --recompute` check of them, and the edits each catches (#29)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_leavers import HR, d, history  # noqa: F401  (history: the fixture of a late leaver)
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.signing import SIGNING_ENV

runner = CliRunner()
END = d(14)
SCOPE = "Filtered: tenant prod only; rows outside this scope are not in this bundle"


def export(url: str, out: Path, *options: str, key: Path | None = None):
    env = {SIGNING_ENV: str(key) if key else ""}
    return runner.invoke(app, ["--db", url, "evidence", "export", "--to", END, "--out", str(out), *options], env=env)


def verify(bundle: Path, *options: str):
    return runner.invoke(app, ["evidence", "verify", str(bundle), *options], env={SIGNING_ENV: ""})


def standalone(bundle: Path, *options: str) -> subprocess.CompletedProcess:
    checker = bundle.parent / f"{bundle.name}-checker.py"
    if not checker.exists():
        assert runner.invoke(app, ["evidence", "checker", "--out", str(checker)]).exit_code == 0
    return subprocess.run(
        [sys.executable, "-I", str(checker), str(bundle), *options], capture_output=True, text=True, timeout=120
    )


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def rehash(bundle: Path, *rels: str) -> None:
    manifest = manifest_of(bundle)
    for rel in rels:
        data = (bundle / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(bundle, manifest)


def both(bundle: Path, *options: str) -> tuple[int, str, int, str]:
    """(exit, output) of evidence verify and of the standalone checker run as python3 -I."""
    mine, theirs = verify(bundle, *options), standalone(bundle, *options)
    return mine.exit_code, mine.output, theirs.returncode, theirs.stdout + theirs.stderr


@pytest.fixture
def hr_bundle(history, tmp_path):  # noqa: F811
    hr = tmp_path / "terminations.csv"
    hr.write_text(HR)
    bundle = tmp_path / "b"
    result = export(history.store.url, bundle, "--hr", str(hr))
    assert result.exit_code == 0, result.output
    return bundle, hr


def test_an_hr_bundle_carries_the_file_its_sha_and_the_leavers_audit_and_both_checkers_pass(hr_bundle):
    bundle, hr = hr_bundle
    manifest = manifest_of(bundle)
    sha = hashlib.sha256(HR.encode()).hexdigest()
    assert (bundle / "hr" / "hr.csv").read_bytes() == HR.encode()
    assert manifest["hr"] == {
        "file": "hr/hr.csv",
        "sha256": sha,
        "bytes": len(HR.encode()),
        "rows": 4,
        "source": str(hr),
        "sla": "24h",
    }
    assert manifest["files"]["hr/hr.csv"]["sha256"] == sha
    leavers = manifest["audits"]["leavers"]
    assert leavers["files"] == ["audits/leavers.csv", "audits/leavers.parquet", "audits/leavers.json"]
    assert (leavers["params"]["hr_file"], leavers["params"]["hr_sha256"]) == ("hr/hr.csv", sha)
    rows = pq.read_table(bundle / "audits" / "leavers.parquet").to_pylist()
    late = sorted({r["who"] for r in rows if r["finding"] == "late-deactivation"})
    after = sorted({r["who"] for r in rows if r["finding"] == "access-after-termination"})
    assert late == ["user:bob", "user:carol"] and after == ["user:bob"]
    attention = sum(r["finding"] in ("late-deactivation", "access-after-termination") for r in rows)
    assert (
        leavers["needs_attention"]
        == attention
        == len(json.loads((bundle / "audits/leavers.json").read_text())["findings"])
    )
    html = (bundle / "report.html").read_text()
    assert '<h2 id="leavers">Leavers</h2>' in html and sha in html
    code, out, code2, out2 = both(bundle)
    assert (code, code2) == (0, 0), out + out2
    line = f"scope: HR file: hr/hr.csv, SHA-256 {sha}, 4 people"
    assert line in out and line in out2


def test_without_hr_the_bundle_has_no_hr_file_and_no_leavers(history, tmp_path):  # noqa: F811
    bundle = tmp_path / "b"
    assert export(history.store.url, bundle).exit_code == 0
    manifest = manifest_of(bundle)
    assert "hr" not in manifest and "filters" not in manifest and "leavers" not in manifest["audits"]
    assert not (bundle / "hr").exists() and not any(n.startswith("hr/") for n in manifest["files"])
    assert "Filtered" not in (bundle / "report.html").read_text()


def _edit_hr_copy(bundle: Path) -> None:
    path = bundle / "hr" / "hr.csv"
    path.write_text(path.read_text().replace("user:bob,", "user:eve,"))  # same size: a changed file


def _edit_manifest_sha(bundle: Path) -> None:
    manifest = manifest_of(bundle)
    manifest["hr"]["sha256"] = hashlib.sha256(b"another file").hexdigest()
    write_manifest(bundle, manifest)


def _edit_leavers_csv(bundle: Path) -> None:
    path = bundle / "audits" / "leavers.csv"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "late-deactivation" not in line) + "\n")


@pytest.mark.parametrize(
    "edit, named",
    [
        (_edit_hr_copy, "changed: hr/hr.csv"),
        (_edit_manifest_sha, "hr/hr.csv: its SHA-256 is"),
        (_edit_leavers_csv, "changed: audits/leavers.csv"),
    ],
)
def test_an_edited_hr_copy_manifest_sha_or_leavers_file_is_caught_by_both_checkers(hr_bundle, edit, named):
    bundle, _ = hr_bundle
    edit(bundle)
    code, out, code2, out2 = both(bundle)
    assert (code, code2) == (1, 1), out + out2
    assert named in out and named in out2


def test_recompute_is_clean_on_an_untouched_hr_bundle_and_catches_an_edited_leavers_row(hr_bundle):
    bundle, _ = hr_bundle
    clean = verify(bundle, "--recompute")
    assert clean.exit_code == 0, clean.output
    assert "note: recomputed from the bundle's" in clean.output
    path = bundle / "audits" / "leavers.csv"
    path.write_text(path.read_text().replace("late-deactivation", "leaver", 1))
    rehash(bundle, "audits/leavers.csv")  # consistent with the manifest: the plain checks pass
    assert verify(bundle).exit_code == 0 and standalone(bundle).returncode == 0
    caught = verify(bundle, "--recompute")
    assert caught.exit_code == 1
    assert "problem: audits/leavers.csv: differs from the one recomputed from the bundle's events" in caught.output


def test_an_hr_file_swapped_after_export_with_its_record_is_caught_by_recompute_and_the_signature(
    history,  # noqa: F811
    tmp_path,
):
    """The copy replaced by another HR file (dropping the late leaver bob) and the manifest's two SHA-256 made to
    match: unsigned, only the exporter's hashes vouched for it, so the plain checks pass and recompute (the
    leavers audit over the swapped file) names the leavers files; signed, the signature fails at once."""
    keys = tmp_path / "k"
    assert runner.invoke(app, ["keys", "create", "--out", str(keys)]).exit_code == 0
    hr = tmp_path / "hr.csv"
    hr.write_text(HR)
    for key in (None, keys / "signing.key"):
        bundle = tmp_path / ("signed" if key else "unsigned")
        assert export(history.store.url, bundle, "--hr", str(hr), key=key).exit_code == 0
        swapped = HR.replace("user:bob,2026-01-05T00:00:00Z\n", "").encode()
        (bundle / "hr" / "hr.csv").write_bytes(swapped)
        manifest = manifest_of(bundle)
        manifest["hr"]["sha256"] = hashlib.sha256(swapped).hexdigest()
        manifest["files"]["hr/hr.csv"] = {"sha256": manifest["hr"]["sha256"], "bytes": len(swapped)}
        manifest["audits"]["leavers"]["params"]["hr_sha256"] = manifest["hr"]["sha256"]
        write_manifest(bundle, manifest)
        if key is None:
            plain = verify(bundle)
            # The leavers audit's JSON file (hashed) still records the original file's SHA-256.
            assert plain.exit_code == 1 and "audits/leavers.json: the parameters it records" in plain.output
            assert standalone(bundle).returncode == 1
        else:
            code, out, code2, out2 = both(bundle, "--public-key", str(keys / "signing.pub"))
            assert (code, code2) == (1, 1)
            assert "signature does not match" in out and "signature does not match" in out2


def test_recompute_reruns_leavers_over_the_bundles_copy(hr_bundle):
    """A copy swapped with every record of it rewritten to match (the leavers JSON's parameters too): the plain
    checks pass, recompute over the swapped copy gives other leavers rows."""
    bundle, _ = hr_bundle
    swapped = HR.replace("user:bob,2026-01-05T00:00:00Z\n", "").encode()
    (bundle / "hr" / "hr.csv").write_bytes(swapped)
    sha = hashlib.sha256(swapped).hexdigest()
    summary = json.loads((bundle / "audits" / "leavers.json").read_text())
    summary["params"]["hr_sha256"], summary["params"]["hr_rows"] = sha, 3
    (bundle / "audits" / "leavers.json").write_text(json.dumps(summary))
    rehash(bundle, "hr/hr.csv", "audits/leavers.json")
    manifest = manifest_of(bundle)
    manifest["hr"]["sha256"], manifest["hr"]["rows"] = sha, 3
    manifest["audits"]["leavers"]["params"].update(hr_sha256=sha, hr_rows=3)
    write_manifest(bundle, manifest)
    code, out, code2, out2 = both(bundle)
    assert (code, code2) == (0, 0), out + out2
    caught = verify(bundle, "--recompute")
    assert caught.exit_code == 1
    assert "problem: audits/leavers.csv: differs from the one recomputed" in caught.output


def test_a_bad_hr_file_is_refused_with_nothing_written(history, tmp_path):  # noqa: F811
    hr = tmp_path / "hr.csv"
    hr.write_text("person,terminated_at\nalice,yesterday\n")
    result = export(history.store.url, tmp_path / "b", "--hr", str(hr))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {hr} line 2: terminated_at 'yesterday' is not a time: give 2026-03-15T10:00:00Z, 2026-03-15T10:00 "
        "(UTC) or 2026-03-15"
    ]
    assert not (tmp_path / "b").exists()


# -- filters -------------------------------------------------------------------------------------

#: How `audit NAME` is asked for the rows of a bundle whose period runs from the ledger's first event to END.
PERIOD = {
    "review": ["--at", END],
    "least-privilege": ["--at", END],
    "secrets": ["--from", d(1), "--to", END],
    "sod": ["--at", END],
    "changes": ["--from", d(1), "--to", END],
    "hygiene": ["--at", END, "--from", d(1), "--to", END],
    "reviews": ["--at", END, "--from", d(1), "--to", END],
    "authority": ["--from", d(1), "--to", END],
    "leavers": ["--at", END],
}


@pytest.fixture
def two_tenants(history):  # noqa: F811
    """The late leaver's history, and a second tenant with a grant and a secret read: rows a filter leaves out."""
    history.create_tenant("dev", at=d(12, 1))
    history.register_connector("gcp", "dev", at=d(12, 2))
    history.assign_role("viewer", "user:dave", tenant="dev", at=d(12, 3))
    history.record_connector_access("gcp", "dev", "user:dave", "allowed", at=d(12, 4))
    return history


@pytest.fixture
def filtered(two_tenants, tmp_path):
    led = two_tenants
    hr = tmp_path / "hr.csv"
    hr.write_text(HR)
    bundle = tmp_path / "f"
    result = export(led.store.url, bundle, "--hr", str(hr), "--tenant", "prod", "--connector", "aws")
    assert result.exit_code == 0, result.output
    return led, bundle, hr


def test_a_filtered_bundles_rows_are_the_filtered_cli_audits_rows(filtered, tmp_path):
    led, bundle, hr = filtered
    manifest = manifest_of(bundle)
    assert manifest["filters"] == {"tenant": "prod", "connector": "aws"}
    assert set(manifest["audits"]) == set(PERIOD)
    start = manifest["period"]["from"]
    for name, meta in manifest["audits"].items():
        takes = ["--tenant", "prod"] + (["--connector", "aws"] if name == "secrets" else [])
        assert meta.get("unfiltered") == (None if name == "secrets" else ["connector"]), name
        options = [o if o != d(1) else start for o in PERIOD[name]]
        extra = ["--hr", str(hr)] if name == "leavers" else []
        out = tmp_path / f"{name}.json"
        result = runner.invoke(
            app,
            ["--db", led.store.url, "audit", name, *options, *extra, *takes, "--format", "json", "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
        cli = json.loads(out.read_text())
        cli_rows = cli["rows"] if isinstance(cli, dict) else cli
        rows = pq.read_table(bundle / "audits" / f"{name}.parquet").to_pylist()
        assert json.loads(json.dumps(rows, default=str)) == cli_rows, name
        assert meta["rows"] == len(cli_rows)
    kept = pq.read_table(bundle / "audits" / "secrets.parquet").to_pylist()
    assert kept and all(r["tenant"] == "prod" and r["connector"] == "aws" for r in kept)
    whole = runner.invoke(app, ["--db", led.store.url, "audit", "secrets", "--to", END, "--format", "json"])
    assert {r["tenant"] for r in json.loads(whole.stdout)} == {"prod", "dev"}  # the filter left rows out


def test_a_filtered_report_says_so_in_its_header_and_every_audit_section(filtered):
    _, bundle, _ = filtered
    html = (bundle / "report.html").read_text()
    header = "Filtered: tenant prod, connector aws only; rows outside this scope are not in this bundle"
    assert html.count(header) == 2  # the banner and the secrets section, the one audit answering both
    assert html.count(SCOPE) == len(PERIOD) - 1
    assert html.count("Not filtered by connector: this audit cannot answer it") == len(PERIOD) - 1


def test_both_checkers_print_the_filter_and_recompute_applies_it(filtered):
    _, bundle, _ = filtered
    code, out, code2, out2 = both(bundle)
    assert (code, code2) == (0, 0), out + out2
    line = "scope: Filtered: tenant prod, connector aws only; rows outside this scope are not in this bundle"
    assert line in out and line in out2
    assert "scope: audit review: not filtered by connector" in out2
    recomputed = verify(bundle, "--recompute")
    assert recomputed.exit_code == 0, recomputed.output


def _drop_filters(manifest: dict, everywhere: bool) -> dict:
    """The manifest of a filtered bundle made to look like an unfiltered one's (at the top only, or everywhere)."""
    manifest.pop("filters")
    if everywhere:
        for name, meta in manifest["audits"].items():
            meta.pop("unfiltered", None)
            for key in ("tenant", "connector"):
                if (name, key) == ("review", "tenant"):
                    meta["params"][key] = None  # review passes tenant to its SQL: unfiltered, it is null
                else:
                    meta["params"].pop(key, None)
    return manifest


@pytest.mark.parametrize("everywhere", [False, True])
def test_a_filter_removed_from_the_manifest_fails_both_checkers(filtered, everywhere):
    """Removed from the manifest's top only, the audits' own parameters contradict it; removed from every
    audit's parameters too, the audits' JSON files (hashed) still record it."""
    _, bundle, _ = filtered
    write_manifest(bundle, _drop_filters(manifest_of(bundle), everywhere))
    code, out, code2, out2 = both(bundle)
    assert (code, code2) == (1, 1), out + out2
    said = (
        "audits/secrets.json: the parameters it records (filters included) are not the manifest's"
        if everywhere
        else "manifest.json: audit secrets is filtered by tenant 'prod', which the manifest's filters do not say"
    )
    assert said in out and said in out2


def test_a_filter_removed_with_every_record_of_it_fails_recompute_and_the_signature(two_tenants, tmp_path):
    led = two_tenants
    keys = tmp_path / "k"
    assert runner.invoke(app, ["keys", "create", "--out", str(keys)]).exit_code == 0
    for key in (None, keys / "signing.key"):
        bundle = tmp_path / ("signed" if key else "unsigned")
        assert export(led.store.url, bundle, "--tenant", "prod", key=key).exit_code == 0
        manifest = _drop_filters(manifest_of(bundle), True)
        for name in manifest["audits"]:
            path = bundle / "audits" / f"{name}.json"
            summary = json.loads(path.read_text())
            summary["params"] = manifest["audits"][name]["params"]
            path.write_text(json.dumps(summary))
            data = path.read_bytes()
            manifest["files"][f"audits/{name}.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        write_manifest(bundle, manifest)
        if key is None:
            code, out, code2, out2 = both(bundle)
            assert (code, code2) == (0, 0), out + out2
            assert "Filtered" not in out + out2  # the partial bundle now looks complete to the plain checks
            caught = verify(bundle, "--recompute")
            assert caught.exit_code == 1
            assert "problem: audits/review.csv: differs from the one recomputed" in caught.output
        else:
            code, out, code2, out2 = both(bundle, "--public-key", str(keys / "signing.pub"))
            assert (code, code2) == (1, 1)
            assert "signature does not match" in out and "signature does not match" in out2


def test_an_unknown_filter_name_is_refused_with_nothing_written(history, tmp_path):  # noqa: F811
    result = export(history.store.url, tmp_path / "b", "--tenant", "staging")
    assert result.exit_code == 2 and result.output.startswith("Error: unknown tenant 'staging'")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_a_filtered_audits_markdown_json_and_table_say_so_and_an_unfiltered_one_does_not(two_tenants, tmp_path):
    url = two_tenants.store.url
    text = "Filtered: tenant prod only; rows outside this scope are not listed"
    md = tmp_path / "s.md"
    result = runner.invoke(app, ["--db", url, "audit", "secrets", "--tenant", "prod", "--out", str(md)])
    assert result.exit_code == 0, result.output
    assert md.read_text().startswith(f"### Connector-secret accesses\n\n**{text}**\n\n| ")
    assert f"as markdown ({text})" in result.output  # what --out says it wrote
    printed = runner.invoke(app, ["--db", url, "audit", "secrets", "--tenant", "prod", "-f", "json"])
    data = json.loads(printed.stdout)  # the rows alone, a list as unfiltered; the scope beside them on stderr
    assert text in printed.stderr
    assert data and {r["tenant"] for r in data} == {"prod"}
    table = runner.invoke(app, ["--db", url, "audit", "secrets", "--tenant", "prod"]).stdout
    assert text in " ".join(table.split())
    hr = tmp_path / "hr.csv"
    hr.write_text(HR)
    leavers = runner.invoke(
        app, ["--db", url, "audit", "leavers", "--hr", str(hr), "--principal", "user:bob", "-f", "json"]
    )
    assert leavers.exit_code == 0, leavers.output
    bob = json.loads(leavers.stdout)
    assert "Filtered: principal user:bob only" in leavers.stderr and {r["who"] for r in bob} == {"user:bob"}
    whole = runner.invoke(app, ["--db", url, "audit", "secrets", "--format", "markdown"]).stdout
    assert "Filtered" not in whole and isinstance(
        json.loads(runner.invoke(app, ["--db", url, "audit", "secrets", "-f", "json"]).stdout), list
    )
