"""report.html as written (issue #17, item 1): every row up to the documented limit, then a note
naming the CSV file; the charts' labels, lines and bars stay readable. The browser side is in
tests/test_evidence_browser.py."""

from __future__ import annotations

import base64
import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import reports.html
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from reports.evidence import export_bundle

END = "2026-04-01T00:00:00Z"


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    with AccessLedger.open(str(path), create=True) as led:
        led.import_lines(generate("small", datetime(2026, 4, 1, tzinfo=UTC)).lines())
    return path


def _export(ledger_db: Path, out: Path) -> str:
    with AccessLedger.open(str(ledger_db)) as led:
        export_bundle(led, out, end=END)
    return (out / "report.html").read_text()


def _data(html: str, tid: str) -> dict:
    m = re.search(
        rf'<script type="application/json" id="{tid}-data" data-encoding="([^"]+)">(.*?)</script>', html, re.S
    )
    assert m, tid
    text = m.group(2)
    return json.loads(gzip.decompress(base64.b64decode(text)) if m.group(1) == "gzip-base64" else text)


def _rows(bundle: Path, audit: str) -> list[dict]:
    """Every row of an audit, from the bundle's Parquet file (its JSON file holds only the findings)."""
    return pq.read_table(bundle / "audits" / f"{audit}.parquet").to_pylist()


def _column(data: dict, name: str) -> list:
    values = data["values"][data["columns"].index(name)]
    return values if isinstance(values, list) else [None if i is None else values["d"][i] for i in values["i"]]


def test_every_row_of_every_audit_is_in_the_page(ledger_db, tmp_path):
    html = _export(ledger_db, tmp_path / "b")
    for name in ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority"):
        rows = _rows(tmp_path / "b", name)
        data = _data(html, f"t-{name}")
        assert data["rows"] == len(rows), name
        assert sorted(filter(None, _column(data, "who"))) == sorted(r["who"] for r in rows if r["who"]), name
    assert "This table holds the first" not in html


def test_every_audit_file_the_report_names_is_in_the_bundle(ledger_db, tmp_path):
    html = _export(ledger_db, tmp_path / "b")
    listed = set(json.loads((tmp_path / "b" / "manifest.json").read_text())["files"])
    named = set(re.findall(r"<code>(audits/[\w-]+\.\w+)</code>", html)) - {"audits/NAME.csv"}  # the <noscript>
    for name in ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority"):
        assert {f"audits/{name}.csv", f"audits/{name}.json"} <= named, name
        assert f"Every row is in <code>audits/{name}.csv</code> and <code>.parquet</code>" in html
    assert named <= listed
    assert "every row as CSV" in html and "as Parquet" in html and "rows needing attention as JSON" in html


def test_a_table_past_the_limit_says_so_and_names_its_csv(ledger_db, tmp_path, monkeypatch):
    monkeypatch.setattr(reports.html, "ROW_LIMIT", 50)
    html = _export(ledger_db, tmp_path / "b")
    secrets = _rows(tmp_path / "b", "secrets")
    data = _data(html, "t-secrets")
    assert data["rows"] == 50
    # The findings needing attention come first, so the limit never hides one.
    assert _column(data, "finding")[0] == "unauthorised-access" and data["attention"] >= 1
    assert (
        f"This table holds the first 50 of {len(secrets):,} rows (findings needing attention first): a "
        "report table stops at 50 rows. Every row is in <code>audits/secrets.csv</code>"
    ) in html


def test_big_tables_are_packed_and_unpack_to_the_same_rows(ledger_db, tmp_path, monkeypatch):
    plain = _data(_export(ledger_db, tmp_path / "a"), "t-secrets")
    monkeypatch.setattr(reports.html, "PACK_FROM", 10_000)
    html = _export(ledger_db, tmp_path / "b")
    assert 'id="t-secrets-data" data-encoding="gzip-base64"' in html
    assert _data(html, "t-secrets") == plain


def test_routine_rows_are_marked_for_the_switch(ledger_db, tmp_path):
    html = _export(ledger_db, tmp_path / "b")
    secrets = _rows(tmp_path / "b", "secrets")
    routine = sum(r["finding"] == "authorised" for r in secrets)
    assert _data(html, "t-secrets")["routine"] == {"column": "finding", "values": ["authorised"], "rows": routine}
    assert f"all rows (also the {routine:,} routine authorised rows)" in html


def test_every_principal_named_by_an_audit_is_listed(ledger_db, tmp_path):
    html = _export(ledger_db, tmp_path / "b")
    named = set()
    for name in ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority"):
        named |= {
            r["who"]
            for r in _rows(tmp_path / "b", name)
            if r["who"] and r["who"].split(":")[0] in ("user", "team", "service_account")
        }
    assert set(_column(_data(html, "principals"), "who")) == named


def _labels(svg: str) -> list[tuple[float, str]]:
    return [(float(x), t) for x, t in re.findall(r'<text class="month" x="([\d.]+)"[^>]*>([^<]+)</text>', svg)]


def test_month_labels_never_overlap():
    days = [f"2025-{m:02d}-{d:02d}" for m in range(11, 13) for d in range(1, 29)] + [
        f"2026-{m:02d}-{d:02d}" for m in range(1, 6) for d in range(1, 29)
    ]
    for n in (len(days), 60, 20):
        svg = reports.html._x_labels(days[:n], reports.html._scales(n, 0, 1)[0])
        labels = _labels(svg)
        assert labels and labels[0][1] == "Nov 2025"
        for (x1, t1), (x2, _) in zip(labels, labels[1:]):
            assert x2 - x1 >= 7.0 * len(t1) + 10, (t1, x1, x2)
        assert all(x + 7.0 * len(t) <= reports.html.W for x, t in labels)


def test_lines_of_equal_value_are_drawn_apart():
    rows = [
        {"at": f"2026-01-{d:02d}", "tenant": t, "principals": 2, "who": "user:a, user:b"}
        for d in range(1, 11)
        for t in ("prod", "staging", "research")
    ]
    svg = reports.html._privileged_chart({"rows": rows})
    heights = {re.findall(r'points="[\d.]+,([\d.]+)', line)[0] for line in re.findall(r"<polyline[^>]*>", svg)}
    assert len(heights) == 3


def test_a_single_denied_read_among_many_allowed_is_visible():
    rows = [
        {"day": f"2026-01-{d:02d}", "allowed": 500, "denied": 1 if d == 5 else 0, "unauthorised": 0, "detail": None}
        for d in range(1, 29)
    ]
    svg = reports.html._secrets_chart({"rows": rows})
    denied = re.findall(r'<rect class="denied"[^>]*height="([\d.]+)"[^>]*fill="([^"]+)"', svg)
    assert len(denied) == 1
    height, colour = denied[0]
    assert float(height) >= reports.html.MIN_BAR and colour == reports.html.DENIED != reports.html.ALLOWED


def test_a_packed_table_is_the_same_bytes_whenever_it_is_packed(monkeypatch):
    """gzip writes the time of packing into its header: the report of a large bundle differed from the one
    `evidence verify --recompute` makes from the same events. The packed data holds no time."""
    import time

    import pyarrow as pa

    monkeypatch.setattr(reports.html, "PACK_FROM", 100)
    table = pa.table({"who": [f"user:u{i}" for i in range(50)]})
    pages = []
    for now in (1_700_000_000.0, 1_800_000_000.0):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        pages.append(reports.html._table("t-x", table, ["who"], None, 50, 0, None))
    assert 'data-encoding="gzip-base64"' in pages[0]
    assert pages[0] == pages[1]
    assert _column(_data(pages[0], "t-x"), "who") == table.column("who").to_pylist()
