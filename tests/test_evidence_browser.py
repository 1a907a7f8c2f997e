"""report.html in a real headless Chromium (Debian's, driven by playwright) with the network off: charts
drawn, tables sort, no console error.

Console messages, uncaught exceptions and every request the page attempts are collected. Under CI (CI=true)
a missing browser is a failure, not a skip (the session's `chromium` fixture, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from reports.evidence import export_bundle


class Browser:
    """One offline page of the session's Chromium, with everything it logs collected."""

    def __init__(self, chromium: Any):
        self.context = chromium.new_context(offline=True, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.logged: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda exc: self.logged.append(f"exception: {exc}"))
        self.page.on(
            "console", lambda m: self.logged.append(f"console: {m.text}") if m.type in ("error", "assert") else None
        )
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str) -> None:
        self.logged.clear()
        self.requests.clear()
        self.page.goto(url, wait_until="load")
        self.page.wait_for_timeout(300)  # late errors, timers

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions seen since the page was opened."""
        return list(self.logged)

    def network_requests(self) -> list[str]:
        """URLs the page tried to fetch from anywhere but the file itself (file:, data:)."""
        return [u for u in self.requests if not u.startswith(("file:", "data:"))]

    def screenshot(self, path: Path) -> bytes:
        return self.page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def browser(chromium):
    b = Browser(chromium)
    yield b
    b.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evidence")
    with AccessLedger.open(str(folder / "ledger.db"), create=True) as led:
        led.import_lines(generate("small").lines())
        return export_bundle(led, folder / "bundle").path


def test_report_renders_offline_with_charts_and_no_console_error(browser, bundle, tmp_path):
    browser.open((bundle / "report.html").as_uri())
    assert browser.errors() == []
    assert browser.network_requests() == []
    assert browser.evaluate("document.documentElement.dataset.ready") == "1"  # the table script ran
    charts = browser.evaluate("""Array.from(document.querySelectorAll('figure.chart')).map(f => {
        const svg = f.querySelector('svg'); const box = svg.getBoundingClientRect();
        return {id: f.id, width: box.width, height: box.height,
                marks: svg.querySelectorAll('polyline.series, g.bar rect, g.unauthorised circle').length,
                unauthorised: svg.querySelectorAll('g.unauthorised').length};
    })""")
    by_id = {c["id"]: c for c in charts}
    assert set(by_id) == {"chart-privileged", "chart-grants", "chart-secrets"}
    for chart in charts:
        assert chart["width"] > 600 and chart["height"] > 100, chart
        assert chart["marks"] > 0, chart
    assert by_id["chart-privileged"]["marks"] >= 3  # one line per tenant
    assert by_id["chart-secrets"]["unauthorised"] == 1  # the planted read, marked
    png = browser.screenshot(tmp_path / "report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_report_tables_sort_and_filter(browser, bundle):
    browser.open((bundle / "report.html").as_uri())
    column = browser.evaluate("""(() => {
        const t = document.getElementById('attention');
        const i = Array.from(t.tHead.rows[0].cells).findIndex(th => th.textContent === 'who');
        const who = () => Array.from(t.tBodies[0].rows).map(r => r.cells[i].textContent);
        t.tHead.rows[0].cells[i].click();
        const up = who();
        t.tHead.rows[0].cells[i].click();
        return {up: up, down: who()};
    })()""")
    assert column["up"] == sorted(column["up"]) and column["down"] == sorted(column["down"], reverse=True)
    shown = browser.evaluate("""(() => {
        const box = document.getElementById('attention-filter');
        box.value = 'user:ivan'; box.dispatchEvent(new Event('input'));
        return Array.from(document.querySelectorAll('#attention tbody tr')).filter(r => !r.hidden).length;
    })()""")
    assert shown == 1
    assert browser.errors() == []


def _type(browser: Browser, box: str, text: str) -> None:
    browser.evaluate(
        f"(() => {{ const b = document.getElementById({json.dumps(box)}); b.value = {json.dumps(text)}; "
        "b.dispatchEvent(new Event('input')); })()"
    )


def _count(browser: Browser, tid: str) -> str:
    return browser.evaluate(f"document.getElementById({json.dumps(tid + '-count')}).textContent")


def _shoot(browser: Browser, path: Path, height: int = 900) -> None:
    """A screenshot of the viewport (1280 x height), also saved under $ACCESS_LEDGER_SHOTS if set."""
    browser.page.set_viewport_size({"width": 1280, "height": height})
    data = browser.page.screenshot(path=str(path))
    if os.environ.get("ACCESS_LEDGER_SHOTS"):
        (Path(os.environ["ACCESS_LEDGER_SHOTS"]) / path.name).write_bytes(data)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def _rows(bundle: Path, audit: str) -> list[dict]:
    """Every row of an audit, from the bundle's Parquet file (its JSON file holds only the findings)."""
    return pq.read_table(bundle / "audits" / f"{audit}.parquet").to_pylist()


def test_search_finds_a_name_past_row_200_and_its_link_opens_the_principal(browser, bundle, tmp_path):
    review = _rows(bundle, "review")
    first_rows = {r["who"] for r in review[:200]}
    name = next(r["who"] for r in review[200:] if r["who"] not in first_rows)
    held = sum(r["who"] == name for r in review)
    browser.open((bundle / "report.html").as_uri())
    _shoot(browser, tmp_path / "report-first-screen.png")
    assert _count(browser, "t-review") == f"rows 1–100 of {len(review):,}"

    _type(browser, "t-review-filter", name)
    assert _count(browser, "t-review") == f"rows 1–{held} of {held} matching; {len(review):,} in all"
    cells = browser.evaluate("""Array.from(document.querySelectorAll('#t-review tbody tr'))
        .map(r => r.textContent)""")
    assert len(cells) == held and all(name in c for c in cells)

    browser.evaluate(
        f"document.querySelector('#t-review tbody a.who[href=\"#who=' + "
        f"encodeURIComponent({json.dumps(name)}) + '\"]').click()"
    )
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    view = browser.evaluate("""(() => { const s = document.getElementById('principal');
        return {hidden: s.hidden, name: s.querySelector('h2').textContent, summary: s.querySelector('.summary').textContent,
                holds: document.getElementById('p-holds-count').textContent}; })()""")
    assert view["hidden"] is False and view["name"] == name
    assert view["summary"].startswith(f"{name} holds {held} permission")
    assert view["holds"] == f"rows 1–{held} of {held}"
    _shoot(browser, tmp_path / "report-principal.png")
    assert browser.errors() == []


def test_every_row_is_reachable_by_paging_and_routine_rows_by_the_switch(browser, bundle):
    review = _rows(bundle, "review")
    secrets = _rows(bundle, "secrets")
    routine = sum(r["finding"] == "authorised" for r in secrets)
    browser.open((bundle / "report.html").as_uri())
    pages = -(-len(review) // 100)
    browser.evaluate("document.querySelector('#t-review-pager button:last-of-type').click()")
    assert _count(browser, "t-review") == f"rows {(pages - 1) * 100 + 1}–{len(review)} of {len(review)}"
    last = browser.evaluate("document.querySelector('#t-review tbody tr:last-child').textContent")
    assert review[-1]["what"] in last and review[-1]["who"] in last

    shown = len(secrets) - routine
    assert _count(browser, "t-secrets") == (
        f"rows 1–{shown} of {shown} ({routine:,} routine rows hidden); {len(secrets):,} in all"
    )
    browser.evaluate("document.getElementById('t-secrets-all').click()")
    assert _count(browser, "t-secrets") == f"rows 1–100 of {len(secrets):,}"
    assert browser.errors() == []


def test_a_packed_table_is_unpacked_in_the_browser(browser, tmp_path, monkeypatch):
    """Big tables travel gzipped in the page; the browser unpacks them (DecompressionStream). A
    table cut at the row limit is named in every principal's view."""
    import reports.html

    monkeypatch.setattr(reports.html, "PACK_FROM", 2_000)
    monkeypatch.setattr(reports.html, "ROW_LIMIT", 3_000)
    with AccessLedger.open(str(tmp_path / "ledger.db"), create=True) as led:
        led.import_lines(generate("small").lines())
        out = export_bundle(led, tmp_path / "bundle", end="2026-11-01T00:00:00Z").path
    html = (out / "report.html").read_text()
    assert 'id="t-secrets-data" data-encoding="gzip-base64"' in html
    secrets = _rows(out, "secrets")
    browser.open((out / "report.html").as_uri())
    browser.evaluate(
        "new Promise(r => { const w = () => document.documentElement.dataset.ready ? r() : setTimeout(w, 50); w(); })"
    )
    browser.evaluate("document.getElementById('t-secrets-all').click()")
    assert _count(browser, "t-secrets") == f"rows 1–100 of 3,000; {len(secrets):,} in all, the first 3,000 in this page"
    browser.evaluate("location.hash = '#who=user%3Aivan'")
    browser.evaluate("new Promise(r => setTimeout(r, 100))")
    note = browser.evaluate("document.querySelector('#principal p.limit').textContent")
    assert f"secrets: 3,000 of {len(secrets):,}" in note and "user:ivan may have more rows" in note
    assert browser.errors() == []


def test_the_harness_sees_console_errors_and_network_attempts(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><script src='https://cdn.example.com/chart.js'></script></head>"
        "<body><script>console.error('deliberate'); notDefined();</script></body></html>"
    )
    browser.open(page.as_uri())
    errors = browser.errors()
    assert any("deliberate" in e for e in errors)
    assert any("notDefined" in e for e in errors)
    assert browser.network_requests() == ["https://cdn.example.com/chart.js"]
