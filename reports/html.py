"""The evidence report as one self-contained HTML page: findings first, charts, every audit, how to check.

Charts are SVG drawn here, styles and the table script are inlined from reports/templates: the
page fetches nothing, so it opens the same offline, in a mail attachment or in ten years.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.audits import AuditResult

SHOW_ATTENTION = 1000
SHOW_OTHER = 200
PALETTE = ("#1f5fae", "#b3261e", "#1b6e3a", "#6a1b9a", "#c25e00", "#00838f")
GRANT, REVOKE, EXPIRE = "#1b6e3a", "#7b8794", "#c25e00"
ALLOWED, DENIED, BAD = "#1f5fae", "#a9b4c0", "#b3261e"
MEANING = {
    "unauthorised-access": "A connector's cloud credentials were read by someone whom no role allowed to read them "
                           "at that moment. Find out how, and whether the credentials must be rotated.",
    "denied-although-authorised": "The platform refused a read the roles allowed: the platform and the access "
                                  "policy disagree.",
    "dormant-principal": "An active account that used nothing during the review window. Deactivate it or remove "
                         "its roles; an unused administrator is the most valuable account to an attacker.",
    "separation-of-duties": "One person or service account holds both sides of a pair of duties that should be "
                            "split between two people (the rule is named in the row).",
    "self-grant": "Someone gave access to themselves. Even when justified, a second person should approve it.",
    "grant-to-deactivated": "A deactivated account (typically a leaver) still holds roles or team memberships. They "
                            "grant nothing while it stays deactivated, but a reactivation would restore them all.",
    "expired-not-revoked": "A time-bound grant reached its end date but was never removed. It grants nothing now; "
                           "remove it so the records say what is true.",
    "role-without-holders": "A custom role nobody holds: delete it or document why it is kept.",
    "empty-team": "A team with no members.",
    "confusable-name": "Two accounts (or teams) whose names look alike, such as a Cyrillic а for a Latin a, 0 for o "
                       "or I for l: in a review or a log one passes for the other. Check that both are who they "
                       "claim to be; rename or deactivate the look-alike.",
    "change-without-reason": "An access change recorded without a ticket or justification.",
}
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FIRST_COLUMNS = ("finding", "rule", "title", "who", "where", "what", "since", "detail")


def _template(name: str) -> str:
    return resources.files("reports").joinpath("templates", name).read_text(encoding="utf-8")


def render_report(context: dict[str, Any], results: dict[str, AuditResult], charts: dict[str, dict[str, Any]],
                  attention: dict[str, int]) -> str:
    """The whole report page. `context`: organization, period, generated_at, version, head, digest, verify, events."""
    from reports.evidence import split_rows

    org = context.get("organization", {}).get("name") or "the organization"
    period = context["period"]
    picked = {name: split_rows(r, SHOW_ATTENTION, SHOW_OTHER) for name, r in results.items()}
    total = sum(attention.values())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Access evidence: {escape(org)}, {escape(period['from'][:10])} to {escape(period['to'][:10])}</title>",
        f"<style>{_template('report.css')}</style></head><body>",
        "<header>",
        f"<h1>Access evidence for {escape(org)}</h1>",
        f"<p class=\"sub\">Period {escape(period['from'])} to {escape(period['to'])} &middot; "
        f"{context['events']:,} events &middot; generated {escape(context['generated_at'])} by access-ledger "
        f"{escape(context['version'])}</p>",
        '<nav><a href="#summary">Summary</a><a href="#charts">Charts</a>'
        + "".join(f'<a href="#{escape(n)}">{escape(r.title)}</a>' for n, r in results.items())
        + '<a href="#check">Checking this bundle</a></nav>',
        "</header><main>",
        _integrity(context),
        '<h2 id="summary">Summary</h2>',
        "<p>This report comes from an access-control ledger: every role created, every role given to or taken from "
        "a person, team or service account, and every read of cloud credentials is recorded as an event that cannot "
        "be changed afterwards without detection. Six audits read those events. Findings marked in red need "
        "someone to act; the rest is the material a reviewer signs off.</p>",
        f"<p><strong>{total}</strong> finding{'s' if total != 1 else ''} need{'s' if total == 1 else ''} "
        "attention.</p>" if total else "<p>No finding needs attention.</p>",
        _cards(results, attention),
        _attention_table(picked, results),
        '<h2 id="charts">Charts</h2>',
        _privileged_chart(charts.get("privileged")),
        _grants_chart(charts.get("grants")),
        _secrets_chart(charts.get("secrets")),
    ]
    for name, result in results.items():
        parts.append(_audit_section(name, result, picked[name], attention.get(name, 0)))
    parts += [_check_section(context, results), "</main>",
              f"<footer>access-ledger {escape(context['version'])} &middot; ledger head position "
              f"{context['head']:,} &middot; this page loads nothing from the network.</footer>",
              f"<script>{_template('report.js')}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


# -- sections ----------------------------------------------------------------------------------

def _integrity(context: dict[str, Any]) -> str:
    v = context["verify"]
    link = escape(str(v.get("link", ""))[:16])
    if v.get("ok"):
        return (f'<div class="banner"><strong>Record intact.</strong><span>At export time the hash chain over all '
                f"{v.get('events', 0):,} events of the ledger verified (head position {v.get('head', 0):,}, link "
                f"<code>{link}&hellip;</code>). The ledger digest is in <code>digest.json</code>: keep a copy "
                "outside the ledger to detect any later rewrite.</span></div>")
    return (f'<div class="banner bad"><strong>Record NOT intact.</strong><span>At export time verify failed at '
            f"position {escape(str(v.get('first_bad_position')))}: {escape(str(v.get('problem')))}. Treat every "
            "finding below with suspicion.</span></div>")


def _cards(results: dict[str, AuditResult], attention: dict[str, int]) -> str:
    out = ['<div class="cards">']
    for name, r in results.items():
        n = attention.get(name, 0)
        review = name in ("review", "changes")
        cls = "bad" if n else ("info" if review else "")
        figure = f"{len(r):,}" if review else str(n)
        label = ("rows to review" if review else ("need attention" if n else "nothing to act on"))
        out.append(f'<div class="card {cls}"><a href="#{escape(name)}"><div class="t">{escape(r.title)}</div>'
                   f'<div class="n">{figure}</div><div class="d">{label} &middot; {len(r):,} rows in all</div></a>'
                   "</div>")
    out.append("</div>")
    return "".join(out)


def _attention_table(picked: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
                     results: dict[str, AuditResult]) -> str:
    rows = []
    kinds = set()
    for name, (att, _) in picked.items():
        for row in att:
            kind = row.get("finding") or "separation-of-duties"
            kinds.add(kind)
            detail = row.get("detail") or row.get("title") or row.get("context") or ""
            if name == "least-privilege" and row.get("held_roles"):
                detail = "holds " + ", ".join(row["held_roles"])
            rows.append({"audit": results[name].title, "finding": kind, "who": row.get("who"),
                         "where": row.get("where"), "what": row.get("what"), "since": row.get("since"),
                         "detail": detail, "positions": row.get("positions")})
    if not rows:
        return ""
    legend = "".join(f"<dt>{escape(k)}</dt><dd>{escape(MEANING[k])}</dd>" for k in sorted(kinds) if k in MEANING)
    return ("<h3>Findings to act on</h3><p>One row per finding, from every audit. Click a column to sort. "
            "Positions are the ledger positions of the events behind each finding (see "
            "<code>events/events.jsonl</code>).</p>"
            + _table("attention", ["audit", "finding", "who", "where", "what", "since", "detail", "positions"],
                     rows, [], len(rows))
            + f'<dl class="meaning">{legend}</dl>')


def _audit_section(name: str, result: AuditResult, picked: tuple[list[dict[str, Any]], list[dict[str, Any]]],
                   attention: int) -> str:
    att, other = picked
    counts: dict[str, int] = {}
    if "finding" in result.columns:
        for pair in result.table.column("finding").value_counts().to_pylist():
            counts[pair["values"]] = pair["counts"]
    from reports.evidence import needs_attention

    chips = "".join(f'<span class="chip{" bad" if needs_attention(name, {"finding": k}) else ""}">{escape(str(k))}: '
                    f"{v:,}</span>" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
    params = ", ".join(f"{k} {v}" for k, v in result.params.items() if k not in ("principal", "tenant") and v
                       is not None and k != "window_start")
    columns = [c for c in FIRST_COLUMNS if c in result.columns] + [c for c in result.columns if c not in FIRST_COLUMNS]
    return (f'<h2 id="{escape(name)}">{escape(result.title)}</h2><p>{escape(result.description)}</p>'
            f'<p class="caption">Run with: {escape(params)}. '
            f"{'<strong>' + str(attention) + ' need attention</strong> (highlighted). ' if attention else ''}"
            f"Every row is in <code>audits/{escape(name)}.csv</code> and <code>.json</code>.</p>"
            + (f'<div class="chips">{chips}</div>' if chips else "")
            + _table(f"t-{name}", columns, att + other, att, len(result)))


def _check_section(context: dict[str, Any], results: dict[str, AuditResult]) -> str:
    sql = "".join(f"<details><summary>{escape(r.title)}: {escape(', '.join(r.sql))}</summary>"
                  + "".join(f"<h3>{escape(f)}</h3><pre>{escape(text)}</pre>" for f, text in r.sql.items())
                  + "</details>" for r in results.values())
    digest = context["digest"]
    return ('<h2 id="check">Checking this bundle</h2>'
            "<p><code>manifest.json</code> lists every file of this bundle with its SHA-256, and records the period, "
            "the command that made the bundle, the ledger's digest and the result of verifying the ledger when it "
            "was made. To check that nothing was changed, removed or added since:</p>"
            "<pre>access-ledger evidence verify PATH-OF-THIS-BUNDLE</pre>"
            "<p>To check the ledger itself has not been rewritten since this export (run where the ledger is):</p>"
            "<pre>access-ledger verify --digest digest.json</pre>"
            f"<p>Digest: position {digest.get('position'):,}, link <code>{escape(str(digest.get('link')))}</code>"
            "</p><h3>The queries</h3><p>Each audit is a SQL query over the event log, run with DuckDB; the text "
            "of each, as run, is below and in the manifest.</p>" + sql)


# -- tables ------------------------------------------------------------------------------------

def _cell(value: Any) -> tuple[str, str | None, bool]:
    """(text, sort key, numeric) of one value."""
    if value is None:
        return "", None, False
    if isinstance(value, bool):
        return ("yes" if value else "no"), None, False
    if isinstance(value, (int, float)):
        return f"{value:,}" if isinstance(value, int) else f"{value:g}", str(value), True
    if isinstance(value, str) and INSTANT.match(value):
        return value[:19].replace("T", " "), value, False
    if isinstance(value, list):
        shown = [_cell(v)[0] for v in value[:12]]
        more = f" (+{len(value) - 12} more)" if len(value) > 12 else ""
        return ", ".join(shown) + more, None, False
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)[0]}" for k, v in value.items() if v is not None), None, False
    return str(value), None, False


def _table(tid: str, columns: list[str], rows: list[dict[str, Any]], highlighted: list[dict[str, Any]],
           total: int) -> str:
    marked = {id(r) for r in highlighted}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text, key, numeric = _cell(r.get(c))
            attrs = (f' data-sort="{escape(key)}"' if key is not None else "") + (' class="num"' if numeric else "")
            if key is not None and not numeric:
                attrs += ' class="time"'
            cells.append(f"<td{attrs}>{escape(text)}</td>")
        cls = ' class="attention"' if id(r) in marked else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    shown = len(rows)
    note = f"showing <span id=\"{tid}-shown\">{shown:,}</span> of {total:,} rows"
    if not rows:
        return '<p class="caption">No rows.</p>'
    return (f'<div class="tools"><input id="{tid}-filter" type="search" placeholder="Filter rows" '
            f'aria-label="Filter rows"><span>{note}</span></div>'
            f'<div class="tablebox"><table id="{tid}" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


# -- charts ------------------------------------------------------------------------------------

W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 260, 52, 14, 14, 36


def _day(text: str) -> str:
    return text[:10]


def _x_labels(days: list[str], x: Any) -> str:
    """Month labels under the axis at the first point of each month."""
    out, last, last_x = [], "", -100.0
    for i, d in enumerate(days):
        month = d[:7]
        if month != last and x(i) - last_x > 48:
            last, last_x = month, x(i)
            label = datetime.strptime(month, "%Y-%m").strftime("%b %Y" if month.endswith("-01") or i == 0 else "%b")
            out.append(f'<line x1="{x(i):.1f}" y1="{H - BOTTOM}" x2="{x(i):.1f}" y2="{H - BOTTOM + 4}" '
                       f'stroke="#9aa5b1"/><text x="{x(i):.1f}" y="{H - BOTTOM + 16}" font-size="11" '
                       f'fill="#5f6b7a">{label}</text>')
    return "".join(out)


def _y_axis(lo: float, hi: float, y: Any) -> str:
    span = max(1.0, hi - lo)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 50_000,
                            100_000, 10**9) if span / s <= 6)
    out = []
    v = (int(lo) // step) * step
    while v <= hi:
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" stroke="#eef0f3"/>'
                   f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end" fill="#5f6b7a">'
                   f"{abs(v):,}</text>")
        v += step
    return "".join(out)


def _svg(label: str, body: str) -> str:
    return (f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
            f'font-family="system-ui, sans-serif">{body}'
            f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#9aa5b1"/></svg>')


def _figure(cid: str, title: str, caption: str, svg: str, legend: list[tuple[str, str]]) -> str:
    keys = "".join(f'<span style="--c:{c}">{escape(t)}</span>' for t, c in legend)
    return (f'<figure class="chart" id="chart-{cid}"><h3>{escape(title)}</h3><p class="caption">{caption}</p>'
            f'{svg}<div class="legend">{keys}</div></figure>')


def _scales(n: int, lo: float, hi: float) -> tuple[Any, Any]:
    width = W - LEFT - RIGHT
    height = H - TOP - BOTTOM

    def x(i: float) -> float:
        return LEFT + (i + 0.5) * width / max(1, n)

    def y(v: float) -> float:
        return TOP + height * (hi - v) / max(1e-9, hi - lo)
    return x, y


def _privileged_chart(chart: dict[str, Any] | None) -> str:
    title = "Who could read cloud credentials, per tenant"
    rows = (chart or {}).get("rows") or []
    days = sorted({r["at"] for r in rows})
    caption = ("Each line is a tenant; its height is the number of people and service accounts that, at the end of "
               "that day, could read the tenant's cloud credentials (connector secrets), which full control of the "
               "tenant includes. Service accounts of pipelines are expected here; a step up that does not come back "
               "down is access that stayed. Hover a line or a day for names.")
    if not days:
        return _figure("privileged", title, caption, _svg(title, '<text x="60" y="120">No privileged access in '
                                                                 "this period.</text>"), [])
    peak: dict[str, int] = {}
    for r in rows:
        peak[r["tenant"]] = max(peak.get(r["tenant"], 0), r["principals"])
    tenants = sorted(peak, key=lambda t: (-peak[t], t))[:len(PALETTE)]
    index = {d: i for i, d in enumerate(days)}
    values = {t: [0] * len(days) for t in tenants}
    who: dict[tuple[str, str], str] = {}
    for r in rows:
        if r["tenant"] in values:
            values[r["tenant"]][index[r["at"]]] = r["principals"]
            who[(r["at"], r["tenant"])] = r["who"] or ""
    hi = max(max(v) for v in values.values()) + 1
    x, y = _scales(len(days), 0, hi)
    body = [_y_axis(0, hi, y), _x_labels(days, x)]
    for k, t in enumerate(tenants):
        pts = []
        for i, v in enumerate(values[t]):
            pts.append(f"{x(i - 0.5):.1f},{y(v):.1f} {x(i + 0.5):.1f},{y(v):.1f}")
        body.append(f'<polyline class="series" fill="none" stroke="{PALETTE[k]}" stroke-width="2" '
                    f'points="{" ".join(pts)}"><title>{escape(t)}</title></polyline>')
    step = (W - LEFT - RIGHT) / len(days)
    for i, d in enumerate(days):
        lines = [f"{t}: {values[t][i]}" + (f" ({_short(who.get((d, t), ''))})" if values[t][i] else "")
                 for t in tenants]
        body.append(f'<rect x="{x(i) - step / 2:.1f}" y="{TOP}" width="{step:.2f}" height="{H - TOP - BOTTOM}" '
                    f'fill="transparent"><title>{escape(_day(d))}\n{escape(chr(10).join(lines))}</title></rect>')
    more = f" The {len(tenants)} tenants with the most are drawn; all are in charts/privileged.csv." \
        if len(peak) > len(tenants) else ""
    return _figure("privileged", title, caption + more, _svg(title, "".join(body)),
                   [(t, PALETTE[k]) for k, t in enumerate(tenants)])


def _short(names: str, n: int = 6) -> str:
    parts = [p for p in names.split(", ") if p]
    return ", ".join(parts[:n]) + (f" and {len(parts) - n} more" if len(parts) > n else "")


def _grants_chart(chart: dict[str, Any] | None) -> str:
    title = "Grants and revocations per week"
    rows = (chart or {}).get("rows") or []
    caption = ("Above the line: roles given to people, teams and service accounts each week. Below: roles taken "
               "away, and time-bound roles that reached their end date. Grants with no matching removals over "
               "time mean access only grows.")
    legend = [("grants", GRANT), ("revocations", REVOKE), ("expiries of time-bound grants", EXPIRE)]
    if not rows:
        return _figure("grants", title, caption, _svg(title, ""), legend)
    up = max(r["grants"] for r in rows)
    down = max(r["revocations"] + r["expiries"] for r in rows)
    hi, lo = max(1, up) * 1.1, -max(1, down) * 1.1
    x, y = _scales(len(rows), lo, hi)
    bw = (W - LEFT - RIGHT) / len(rows) * 0.7
    body = [_y_axis(lo, hi, y), _x_labels([r["week"] for r in rows], x),
            f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{W - RIGHT}" y2="{y(0):.1f}" stroke="#5f6b7a"/>']
    for i, r in enumerate(rows):
        g, rv, ex = r["grants"], r["revocations"], r["expiries"]
        tip = escape(f"Week of {_day(r['week'])}: {g} grants, {rv} revocations, {ex} expiries")
        left = x(i) - bw / 2
        body.append(f'<g class="bar"><title>{tip}</title>')
        if g:
            body.append(f'<rect x="{left:.1f}" y="{y(g):.1f}" width="{bw:.1f}" height="{y(0) - y(g):.1f}" '
                        f'fill="{GRANT}"/>')
        if rv:
            body.append(f'<rect x="{left:.1f}" y="{y(0):.1f}" width="{bw:.1f}" height="{y(-rv) - y(0):.1f}" '
                        f'fill="{REVOKE}"/>')
        if ex:
            body.append(f'<rect x="{left:.1f}" y="{y(-rv):.1f}" width="{bw:.1f}" height="{y(-rv - ex) - y(-rv):.1f}" '
                        f'fill="{EXPIRE}"/>')
        body.append("</g>")
    return _figure("grants", title, caption, _svg(title, "".join(body)), legend)


def _secrets_chart(chart: dict[str, Any] | None) -> str:
    title = "Connector-secret accesses per day"
    rows = (chart or {}).get("rows") or []
    caption = ("Reads of the cloud credentials held by service connectors, per day: allowed reads in blue, reads the "
               "platform refused in grey. A red marker is a day with a read that <strong>no role authorised</strong> "
               "at that instant; hover it for who, which connector and when.")
    legend = [("allowed", ALLOWED), ("denied by the platform", DENIED), ("not authorised by any role", BAD)]
    if not rows:
        return _figure("secrets", title, caption, _svg(title, ""), legend)
    hi = max(r["allowed"] + r["denied"] for r in rows) * 1.25 + 1
    x, y = _scales(len(rows), 0, hi)
    bw = max(1.0, (W - LEFT - RIGHT) / len(rows) * 0.8)
    body = [_y_axis(0, hi, y), _x_labels([r["day"] for r in rows], x)]
    marks = []
    for i, r in enumerate(rows):
        a, d, u = r["allowed"], r["denied"], r["unauthorised"]
        if not (a or d):
            continue
        tip = f"{_day(r['day'])}: {a} allowed, {d} denied" + (f", {u} NOT AUTHORISED: {r['detail']}" if u else "")
        left = x(i) - bw / 2
        body.append(f'<g class="bar"><title>{escape(tip)}</title><rect x="{left:.1f}" y="{y(a):.1f}" '
                    f'width="{bw:.2f}" height="{y(0) - y(a):.1f}" fill="{ALLOWED}"/>'
                    + (f'<rect x="{left:.1f}" y="{y(a + d):.1f}" width="{bw:.2f}" height="{y(a) - y(a + d):.1f}" '
                       f'fill="{DENIED}"/>' if d else "") + "</g>")
        if u:
            cy = y(a + d) - 12
            marks.append(f'<g class="unauthorised"><title>{escape(tip)}</title>'
                         f'<line x1="{x(i):.1f}" y1="{TOP}" x2="{x(i):.1f}" y2="{H - BOTTOM}" stroke="{BAD}" '
                         f'stroke-dasharray="3 3"/><circle cx="{x(i):.1f}" cy="{max(TOP + 6, cy):.1f}" r="6" '
                         f'fill="{BAD}"/></g>')
            if len(marks) <= 3:
                label = escape(_short(r["detail"] or "", 1).split(" at ")[0])
                anchor = "end" if x(i) > W * 0.7 else "start"
                dx = -10 if anchor == "end" else 10
                marks.append(f'<text x="{x(i) + dx:.1f}" y="{max(TOP + 10, cy + 4):.1f}" font-size="12" '
                             f'fill="{BAD}" text-anchor="{anchor}" font-weight="600">{label}</text>')
    return _figure("secrets", title, caption, _svg(title, "".join(body + marks)), legend)
