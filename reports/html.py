"""The evidence report as one self-contained HTML page: findings first, charts, every audit, how to check.

Charts are SVG drawn here, styles and the table script are inlined from reports/templates: the
page fetches nothing, so it opens the same offline, in a mail attachment or in ten years.

Every row of every audit is in the page, up to ROW_LIMIT rows a table (past it the table says
so and points to its CSV file): the rows travel as compact JSON, column by column, repeated
values stored once, and the script renders one page of rows at a time, searches all of them,
sorts them, and draws a view per principal (`#who=user:NAME`) from them. A table whose data
passes PACK_FROM bytes is gzipped and base64-encoded in the page; browsers unpack it with
DecompressionStream (Chromium, Firefox, Safari); one without it says so and names the CSV file.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
from datetime import datetime
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from reports.check_bundle import HR_COPY, filter_words
from reports.findings import ROUTINE, first_rows, needs_attention, plain

if TYPE_CHECKING:
    import pyarrow as pa

    from reports.audits import AuditResult

#: Rows of one table in the report (README, "Evidence"); past it the table points to its CSV file.
ROW_LIMIT = 200_000
#: From this many bytes of JSON, a table's data is stored gzipped (base64) in the page.
PACK_FROM = 1 << 20

PALETTE = ("#1f5fae", "#b3261e", "#1b6e3a", "#6a1b9a", "#c25e00", "#00838f")
GRANT, REVOKE, EXPIRE = "#1b6e3a", "#7b8794", "#c25e00"
ALLOWED, DENIED, BAD = "#1f5fae", "#e37400", "#b3261e"
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
    "token-of-deactivated": "A service token that was never revoked and has not expired, held by an account that "
    "was deactivated. The service refuses it while the account stays deactivated; revoke "
    "it, or a reactivation makes it work again.",
    "admin-token": "A service token with the admin scope, which can issue and revoke tokens: keep as few as "
    "possible, each with an expiry.",
    "token-never-used": "A service token in force that has never been used (the service records each token's "
    "first use): revoke it if nobody needs it, since an unused secret is one more to leak.",
    "api-key-of-deactivated": "An API key (of a ZenML service account) still active although its account was "
    "deactivated: reactivating the account makes the key work again. Deactivate or delete the key.",
    "api-key-unused": "An active API key not used to log in for 90 days or more: delete it, or rotate it and "
    "record why it is kept.",
    "change-without-reason": "An access change recorded without a ticket or justification.",
}
FIRST_COLUMNS = ("finding", "rule", "title", "who", "where", "what", "since", "detail")
PRINCIPAL = re.compile(r"^(user|team|service_account):")


INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
INSTANT_PARTS = r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$"  # the same, for Arrow
LIST_SHOWN = 12  # items of a list cell shown; the CSV and JSON files hold them all


def _template(name: str) -> str:
    return resources.files("reports").joinpath("templates", name).read_text(encoding="utf-8")


def render_report(
    context: dict[str, Any],
    results: dict[str, AuditResult],
    charts: dict[str, dict[str, Any]],
    attention: dict[str, int],
    reviews: list[dict[str, Any]] | None = None,
) -> str:
    """The whole report page. `context`: organization, period, generated_at, version, head, digest, verify, events;
    `reviews`: the access review campaigns of the period (reports/review_evidence.py)."""
    org = context.get("organization", {}).get("name") or "the organization"
    period = context["period"]
    total = sum(attention.values())
    findings = _attention_rows(results)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Access evidence: {escape(org)}, {escape(period['from'][:10])} to {escape(period['to'][:10])}</title>",
        f"<style>{_template('report.css')}</style></head><body>",
        _tampered(context),
        "<header>",
        f"<h1>Access evidence for {escape(org)}</h1>",
        f'<p class="sub">Period {escape(period["from"])} to {escape(period["to"])} &middot; '
        + (
            f'<strong class="coverage">{escape(period["coverage"])}</strong> &middot; '
            if period.get("coverage")
            else ""
        )
        + f"{context['events']:,} events &middot; generated {escape(context['generated_at'])} by access-ledger "
        f"{escape(context['version'])}</p>",
        '<nav><a href="#summary">Summary</a><a href="#charts">Charts</a><a href="#principals">People and '
        "accounts</a>"
        + "".join(f'<a href="#{escape(n)}">{escape(r.title)}</a>' for n, r in results.items())
        + '<a href="#access-reviews">Access reviews</a><a href="#check">Checking this bundle</a></nav>',
        "</header><main>",
        '<noscript><p class="banner bad">The tables of this page are drawn by its script, which is off: every row '
        "is also in <code>audits/NAME.csv</code> beside this file.</p></noscript>",
        _integrity(context),
        _scope(context),
        '<section id="principal" hidden></section>',
        '<h2 id="summary">Summary</h2>',
        "<p>This report comes from an access-control ledger: every role created, every role given to or taken from "
        "a person, team or service account, and every read of cloud credentials is recorded as an event that cannot "
        f"be changed afterwards without detection. {len(results)} audits read those events. Findings marked in red need "
        "someone to act; the rest is the material a reviewer signs off. Every name is a link to what that person "
        "or account holds, where from, when they last used it and their findings.</p>",
        f"<p><strong>{total}</strong> finding{'s' if total != 1 else ''} need{'s' if total == 1 else ''} attention.</p>"
        if total
        else "<p>No finding needs attention.</p>",
        _cards(results, attention),
        _attention_table(findings),
        _triaged_section(results),
        '<h2 id="charts">Charts</h2>',
        _privileged_chart(charts.get("privileged")),
        _grants_chart(charts.get("grants")),
        _secrets_chart(charts.get("secrets")),
        _principals_section(results, findings),
    ]
    for name, result in results.items():
        parts.append(_audit_section(name, result, attention.get(name, 0), _audit_scope(context, name, result)))
    parts += [
        _reviews_section(reviews or []),
        _check_section(context, results),
        "</main>",
        f"<footer>access-ledger {escape(context['version'])} &middot; ledger head position "
        f"{context['head']:,} &middot; this page loads nothing from the network.</footer>",
        f"<script>{_template('report.js')}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# -- sections ----------------------------------------------------------------------------------


def _tampered(context: dict[str, Any]) -> str:
    """The page's first banner when the ledger failed verify at export (exported with --allow-tampered)."""
    v = context["verify"]
    if v.get("ok"):
        return ""
    return (
        f'<div class="banner bad" id="tampered"><strong>TAMPERED LEDGER.</strong><span>verify failed at export '
        f"(position {escape(str(v.get('first_bad_position')))}: {escape(str(v.get('problem')))}); this bundle "
        "was exported anyway with --allow-tampered. Nothing in it can be relied on.</span></div>"
    )


def _integrity(context: dict[str, Any]) -> str:
    v = context["verify"]
    link = escape(str(v.get("link", ""))[:16])
    if v.get("ok"):
        return (
            f'<div class="banner"><strong>Record intact.</strong><span>At export time the hash chain over all '
            f"{v.get('events', 0):,} events of the ledger verified (head position {v.get('head', 0):,}, link "
            f"<code>{link}&hellip;</code>). The ledger digest is in <code>digest.json</code>: keep a copy "
            "outside the ledger to detect any later rewrite.</span></div>"
        )
    return (
        f'<div class="banner bad"><strong>Record NOT intact.</strong><span>At export time verify failed at '
        f"position {escape(str(v.get('first_bad_position')))}: {escape(str(v.get('problem')))}. Treat every "
        "finding below with suspicion.</span></div>"
    )


def _cards(results: dict[str, AuditResult], attention: dict[str, int]) -> str:
    out = ['<div class="cards">']
    for name, r in results.items():
        n = attention.get(name, 0)
        review = name in ("review", "changes")
        cls = "bad" if n else ("info" if review else "")
        figure = f"{len(r):,}" if review else str(n)
        label = "rows to review" if review else ("need attention" if n else "nothing to act on")
        out.append(
            f'<div class="card {cls}"><a href="#{escape(name)}"><div class="t">{escape(r.title)}</div>'
            f'<div class="n">{figure}</div><div class="d">{label} &middot; {len(r):,} rows in all</div></a>'
            "</div>"
        )
    out.append("</div>")
    return "".join(out)


def _attention_rows(results: dict[str, AuditResult]) -> list[dict[str, Any]]:
    """One row per finding needing attention, from every audit (at most ROW_LIMIT)."""
    rows: list[dict[str, Any]] = []
    for name, result in results.items():
        table, n_att = first_rows(result, ROW_LIMIT - len(rows))
        for row in table.slice(0, n_att).to_pylist():
            kind = row.get("finding") or "separation-of-duties"
            detail = row.get("detail") or row.get("title") or row.get("context") or ""
            if name == "least-privilege" and row.get("held_roles"):
                detail = "holds " + ", ".join(row["held_roles"])
            rows.append(
                {
                    "audit": result.title,
                    "finding": kind,
                    "who": row.get("who"),
                    "where": row.get("where"),
                    "what": row.get("what"),
                    "since": plain(row.get("since")),
                    "detail": detail,
                    "positions": row.get("positions"),
                }
            )
    return rows


def _attention_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    import pyarrow as pa

    kinds = {r["finding"] for r in rows}
    legend = "".join(f"<dt>{escape(k)}</dt><dd>{escape(MEANING[k])}</dd>" for k in sorted(kinds) if k in MEANING)
    columns = ["audit", "finding", "who", "where", "what", "since", "detail", "positions"]
    return (
        "<h3>Findings to act on</h3><p>One row per finding, from every audit. Click a column to sort, a name "
        "for everything about that principal. Positions are the ledger positions of the events behind each "
        "finding (see <code>events/events.jsonl</code>).</p>"
        + _table("attention", pa.Table.from_pylist(rows), columns, None, len(rows), len(rows), None)
        + f'<dl class="meaning">{legend}</dl>'
    )


def _triaged_section(results: dict[str, AuditResult]) -> str:
    """The findings taken out of those to act on at the period's end: who accepted or suppressed them, why, until."""
    from reports.findings import triaged_table

    table = triaged_table(results)
    if table.num_rows == 0:
        return ""
    columns = ["finding_id", "audit", "kind", "who", "where", "what", "finding_state", "decided_by", "decided_at"]
    columns += ["decision_reason", "until"]
    return (
        f'<h3 id="triaged">Accepted and suppressed findings</h3><p>{table.num_rows:,} finding'
        f"{'s' if table.num_rows != 1 else ''} an authorised person accepted or suppressed, with the reason and the "
        "date the decision lapses (the finding then needs attention again, as it does when its facts change). "
        "Not counted above; every one is in <code>audits/findings.csv</code>.</p>"
        + _table("triaged", table, columns, None, table.num_rows, 0, None)
    )


def _principals_section(results: dict[str, AuditResult], findings: list[dict[str, Any]]) -> str:
    """Every principal any audit names: what they hold, where, last use, findings; each a link to their view."""
    import pyarrow as pa
    import pyarrow.compute as pc

    audits: dict[str, list[str]] = {}
    for result in results.values():
        if "who" in result.columns:
            for who in pc.unique(result.table.column("who")).to_pylist():
                if who and PRINCIPAL.match(who):
                    audits.setdefault(who, []).append(result.title)
    if not audits:
        return ""
    held: dict[str, tuple[int, list[str], str | None]] = {}
    review = results.get("review")
    if review is not None and {"who", "where", "last_used"} <= set(review.columns):
        grouped = review.table.group_by("who").aggregate(
            [("who", "count"), ("where", "distinct"), ("last_used", "max")]
        )
        for who, n, where, last in zip(
            *(grouped.column(c).to_pylist() for c in ("who", "who_count", "where_distinct", "last_used_max")),
            strict=True,
        ):
            held[who] = (n, sorted(w for w in where if w), last)
    counts: dict[str, int] = {}
    for row in findings:
        counts[row["who"]] = counts.get(row["who"], 0) + 1
    rows = []
    for who in sorted(audits):
        n, where, last = held.get(who, (0, [], None))
        rows.append(
            {
                "who": who,
                "kind": who.split(":", 1)[0],
                "permissions": n,
                "where": where,
                "last_used": last,
                "findings": counts.get(who, 0),
                "audits": audits[who],
            }
        )
    table = pa.Table.from_pylist(rows)
    return (
        '<h2 id="principals">People and accounts</h2><p>Every user, team and service account the audits name, '
        "with how many permissions the access review shows them holding, where, their last use of any, and "
        "their findings. A name opens everything about that principal: what they hold and where from (role, "
        "team), when each was last used, and every row of every audit that names them.</p>"
        + _table("principals", table, list(table.column_names), None, len(rows), 0, None)
    )


def _scope(context: dict[str, Any]) -> str:
    """The banners of a filtered bundle (what it leaves out) and of one carrying an HR file (its SHA-256)."""
    out = []
    filters = context.get("filters") or {}
    if filters:
        out.append(
            f'<div class="banner bad" id="filtered"><strong>{escape(filter_words(filters))}.</strong><span>Each '
            "audit below keeps only the rows in this scope (an audit that cannot answer a filter says so in its "
            "section). The events, the charts other than the secrets chart, and the access review records are "
            "the whole ledger's: the events are needed to check the hash chain.</span></div>"
        )
    hr = context.get("hr")
    if hr:
        out.append(
            f'<div class="banner" id="hr-file"><strong>HR file.</strong><span>The leavers audit reconciles '
            f"<code>{escape(HR_COPY)}</code>, a copy of <code>{escape(str(hr.get('source')))}</code> "
            f"({hr.get('rows', 0):,} people), SHA-256 <code>{escape(str(hr.get('sha256')))}</code>: compare it "
            "with the HR system's file.</span></div>"
        )
    return "".join(out)


def _audit_scope(context: dict[str, Any], name: str, result: AuditResult) -> str:
    """The line of an audit's section saying which filters narrowed its rows and which it could not answer."""
    filters = context.get("filters") or {}
    if not filters:
        return ""
    applied = {k: v for k, v in filters.items() if result.params.get(k) == v}
    unanswered = (context.get("unfiltered") or {}).get(name) or []
    out = f'<p class="banner bad filtered"><strong>{escape(filter_words(applied))}.</strong>' if applied else ""
    if unanswered:
        out += (
            ("" if applied else '<p class="banner bad filtered">')
            + f"<span>Not filtered by {escape(', '.join(unanswered))}: this audit cannot answer "
            f"{'it' if len(unanswered) == 1 else 'them'}, so its rows are not narrowed by "
            f"{'it' if len(unanswered) == 1 else 'them'}.</span>"
        )
    return out + "</p>" if out else ""


def _audit_section(name: str, result: AuditResult, attention: int, scope: str = "") -> str:
    counts: dict[str, int] = {}
    if "finding" in result.columns:
        for pair in result.table.column("finding").value_counts().to_pylist():
            counts[pair["values"]] = pair["counts"]
    chips = "".join(
        f'<span class="chip{" bad" if needs_attention(name, {"finding": k}) else ""}">{escape(str(k))}: {v:,}</span>'
        for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))
    )
    params = ", ".join(
        f"{k} {v}"
        for k, v in result.params.items()
        if k not in ("principal", "tenant") and v is not None and k != "window_start"
    )
    columns = [c for c in FIRST_COLUMNS if c in result.columns] + [c for c in result.columns if c not in FIRST_COLUMNS]
    shown, n_att = first_rows(result, ROW_LIMIT)
    routine = None
    if name in ROUTINE and "finding" in result.columns:
        import pyarrow as pa
        import pyarrow.compute as pc

        kinds = pa.array(sorted(ROUTINE[name]))
        hidden = pc.sum(pc.is_in(shown.column("finding"), value_set=kinds)).as_py() or 0  # of the rows in the page
        routine = {"column": "finding", "values": kinds.to_pylist(), "rows": hidden}
    return (
        f'<h2 id="{escape(name)}">{escape(result.title)}</h2>{scope}<p>{escape(result.description)}</p>'
        f'<p class="caption">Run with: {escape(params)}. '
        f"{'<strong>' + str(attention) + ' need attention</strong> (highlighted, first). ' if attention else ''}"
        f"Every row is in <code>audits/{escape(name)}.csv</code> and <code>.parquet</code>; "
        f"<code>audits/{escape(name)}.json</code> holds the summary and the rows needing attention.</p>"
        + (f'<div class="chips">{chips}</div>' if chips else "")
        + _table(f"t-{name}", shown, columns, routine, len(result), n_att, f"audits/{name}.csv")
    )


REVIEW_COLUMNS = (
    "item",
    "principal",
    "role",
    "tenant",
    "resource",
    "via",
    "privileged",
    "reviewer",
    "decision",
    "decided_at",
    "decision_position",
    "reason",
    "outcome",
    "remediation",
    "removal_position",
    "removed_at",
    "seconds_to_revoke",
    "exception",
)


def _reviews_section(reviews: list[dict[str, Any]]) -> str:
    """Per access review campaign of the period: scope, population, progress, every decision, remediation, exceptions."""
    head = (
        '<h2 id="access-reviews">Access reviews</h2><p>Each campaign of the period: who reviewed which access, '
        "every decision with its reviewer, time and reason, the removal event that carried out each revocation "
        "and how long after the decision it came, and what was left as an exception. The population was fixed "
        "when the campaign started; its file holds it exactly as hashed into the start event, so "
        "<code>sha256sum</code> of the file gives the SHA-256 shown, and <code>check_bundle.py</code> checks "
        "it against the chained event.</p>"
    )
    if not reviews:
        return head + "<p>No access review campaign was started or open in this period.</p>"
    return head + "".join(_campaign(i, r) for i, r in enumerate(reviews, 1))


def _campaign(index: int, r: dict[str, Any]) -> str:
    import pyarrow as pa

    scope, population, closed = r["scope"], r["population"], r["closed"]
    teams = "".join(f"; {escape(pair.replace('=', ' reviewed by '))}" for pair in scope["reviewers"])
    facts = [
        (
            "Scope",
            f"tenants {escape(', '.join(scope['tenants']))}; "
            + ("privileged assignments only" if scope["privileged_only"] else "every assignment in force"),
        ),
        (
            "Reviewers",
            escape(scope["reviewer"])
            + teams
            + (f"; fallback {escape(scope['fallback_reviewer'])}" if scope.get("fallback_reviewer") else ""),
        ),
        ("Owner", escape(r["owner"])),
        (
            "Started",
            f"{escape(r['started_at'])} (position {r['start_position']:,}; population as of position "
            f"{r['as_of_position']:,})" + (f"; due {escape(scope['due'])}" if scope.get("due") else ""),
        ),
        (
            "Closed",
            "not by the end of the period"
            if closed is None
            else f"{escape(closed['at'])} by {escape(closed['actor'])} (position {closed['position']:,}); undecided items: "
            f"{escape(closed['undecided'])}; revocations "
            + ("applied by the close" if closed["auto_revoke"] else "left to be recorded when done"),
        ),
        (
            "Population",
            f"{population['items']:,} items, SHA-256 <code>{escape(population['sha256'])}</code> in "
            f"<code>{escape(population['file'])}</code>",
        ),
    ]
    out = [f'<h3 id="review-{index}">Campaign {escape(r["campaign"])}</h3>', '<dl class="meaning">']
    out += [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts]
    if r.get("error"):
        out.append(f'</dl><p class="banner bad">{escape(r["error"])}</p>')
        return "".join(out)
    p = r["progress"]
    per = "; ".join(f"{escape(who)} {n['decided']:,} of {n['items']:,}" for who, n in r["reviewers"].items())
    out.append(
        f"<dt>Progress</dt><dd>{p['decided']:,} of {p['items']:,} items decided ({p['kept']:,} kept, "
        f"{p['decided'] - p['kept']:,} revoked); per reviewer: {per}</dd>"
    )
    waits = sorted(i["time_to_revoke_seconds"] for i in r["items"] if i["time_to_revoke_seconds"] is not None)
    out.append(
        f"<dt>Remediation</dt><dd>{p['carried_out']:,} of {p['revoked']:,} revocations carried out"
        + (
            f"; time to revoke: median {_duration(waits[len(waits) // 2])}, longest {_duration(waits[-1])}"
            if waits
            else ""
        )
        + "</dd></dl>"
    )
    exceptions = r["exceptions"]
    if exceptions:
        out.append(
            f'<p class="limit"><strong>{len(exceptions):,} exception{"s" if len(exceptions) != 1 else ""}'
            "</strong> (first in the table): "
            + "; ".join(
                f"item {e['item']} ({escape(e['principal'])}, {escape(e['role'])} in "
                f"{escape(e['tenant'])}): {escape(e['exception'])}"
                for e in exceptions[:LIST_SHOWN]
            )
            + (
                f"; and {len(exceptions) - LIST_SHOWN:,} more in <code>{escape(r['file'])}</code>"
                if len(exceptions) > LIST_SHOWN
                else ""
            )
            + ".</p>"
        )
    else:
        out.append("<p>No exception.</p>")
    items = sorted(r["items"], key=lambda i: (i["exception"] is None, i["item"]))[:ROW_LIMIT]
    rows = [
        {
            **{c: i.get(c) for c in REVIEW_COLUMNS},
            "remediation": (i["remediation"] or {}).get("type"),
            "removal_position": (i["remediation"] or {}).get("position"),
            "removed_at": (i["remediation"] or {}).get("at"),
            "seconds_to_revoke": i["time_to_revoke_seconds"],
        }
        for i in items
    ]
    out.append(
        _table(
            f"rv-{index}",
            pa.Table.from_pylist(rows),
            list(REVIEW_COLUMNS),
            None,
            len(r["items"]),
            len(exceptions),
            r["file"],
        )
    )
    return "".join(out)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds} s"


def _check_section(context: dict[str, Any], results: dict[str, AuditResult]) -> str:
    sql = "".join(
        f"<details><summary>{escape(r.title)}: {escape(', '.join(r.sql))}</summary>"
        + "".join(f"<h3>{escape(f)}</h3><pre>{escape(text)}</pre>" for f, text in r.sql.items())
        + "</details>"
        for r in results.values()
    )
    digest = context["digest"]
    return (
        '<h2 id="check">Checking this bundle</h2>'
        "<p><code>manifest.json</code> lists every other file of this bundle with its SHA-256, and records the "
        "period, the command that made the bundle, the ledger's digest and the result of verifying the ledger "
        "when it was made. To check that nothing was changed, removed or added since:</p>"
        "<pre>access-ledger evidence verify PATH-OF-THIS-BUNDLE</pre>"
        "<p>Each audit is in <code>audits/</code>: every row as CSV (a cell a spreadsheet would take for a "
        "formula starts with <code>'</code>) and as Parquet (the exact values), and its summary with only the "
        "rows needing attention as JSON.</p>"
        "<p>That also recomputes the hash chain over the bundle's events (<code>events/chain.jsonl</code> holds "
        "what the chain covers beside each line of <code>events/events.jsonl</code>, the manifest its start "
        "and end links). Nothing inside a bundle can vouch for itself: anchor it with what you hold outside "
        "it, <code>--digest</code> a digest taken at export time, <code>--public-key signing.pub</code> the "
        "signer's public key (the manifest must carry its signature), or <code>--after PREVIOUS-BUNDLE</code> "
        "(this one must start exactly where that one ended). Without access-ledger installed, the bundle "
        "is checked with Python alone (and <code>cryptography</code> or <code>openssl</code> for the "
        "signature) by a checker you obtained independently, never by the <code>check_bundle.py</code> "
        "that travelled inside this bundle: write one with <code>access-ledger evidence checker --out "
        "check_bundle.py</code> on an installation you trust, or compare its SHA-256 with the one the "
        "access-ledger README publishes (the manifest's <code>checker</code> names the exporter's). Always "
        "run it isolated (<code>-I</code>), so no file beside it is imported:</p>"
        "<pre>python3 -I YOUR-CHECKER.py PATH-OF-THIS-BUNDLE --public-key signing.pub --digest "
        "YOUR-DIGEST.json</pre>"
        "<p>To check the ledger itself has not been rewritten since this export (run where the ledger is):</p>"
        "<pre>access-ledger verify --digest digest.json</pre>"
        f"<p>Digest: position {digest.get('position'):,}, link <code>{escape(str(digest.get('link')))}</code>"
        "</p><h3>The queries</h3><p>Each audit is a SQL query over the event log, run with DuckDB; the text "
        "of each, as run, is below and in the manifest.</p>" + sql
    )


# -- tables ------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """The text a cell shows for one value (None: empty)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        value = plain(value)
    if isinstance(value, str) and INSTANT.match(value):
        return value[:19].replace("T", " ")
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        shown = [_text(v) or "" for v in items[:LIST_SHOWN]]
        more = f" (+{len(items) - LIST_SHOWN:,} more)" if len(items) > LIST_SHOWN else ""
        return ", ".join(shown) + more
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _column(array: pa.ChunkedArray) -> Any:
    """One column for the page: numbers as they are; text stored once per distinct value when that
    is shorter ({"d": distinct texts, "i": index of each row's, null for empty})."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        return array.to_pylist()
    if array.num_chunks == 0:
        return []
    arr = array.combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = _joined(arr)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.replace_substring_regex(arr, INSTANT_PARTS, r"\1 \2")  # instants as the page shows them
    elif not pa.types.is_boolean(arr.type):
        arr = pa.array([_text(v) for v in arr.to_pylist()], pa.string())
    encoded = arr.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    if pa.types.is_boolean(arr.type):
        distinct = [_text(v) for v in distinct]
    indices = encoded.indices.to_pylist()
    if len(distinct) * 2 > len(indices):
        return [None if i is None else distinct[i] for i in indices]
    return {"d": distinct, "i": indices}


def _joined(lists: pa.Array) -> pa.Array:
    """A list column as text: its first LIST_SHOWN items joined by ", ", then how many more."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(lists.type.value_type):
        try:
            lists = lists.cast(pa.list_(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.array([_text(v) for v in lists.to_pylist()], pa.string())
    text = pc.binary_join(pc.list_slice(lists, 0, LIST_SHOWN), ", ")
    lengths = pc.fill_null(pc.list_value_length(lists), 0)
    if not pc.any(pc.greater(lengths, LIST_SHOWN)).as_py():
        return text
    more = pc.if_else(
        pc.greater(lengths, LIST_SHOWN),
        pc.binary_join_element_wise(" (+", pc.cast(pc.subtract(lengths, LIST_SHOWN), pa.string()), " more)", ""),
        "",
    )
    return pc.binary_join_element_wise(text, more, "")


def _table(
    tid: str,
    table: pa.Table,
    columns: list[str],
    routine: dict[str, Any] | None,
    total: int,
    attention: int,
    csv: str | None,
) -> str:
    """A table's frame, filled by report.js from its data (the rows in `table`, already in order:
    those needing attention first, `attention` of them)."""
    if total == 0:
        return '<p class="caption">No rows.</p>'
    data: dict[str, Any] = {
        "columns": columns,
        "rows": table.num_rows,
        "attention": attention,
        "values": [_column(table.column(c)) for c in columns],
    }
    if routine:
        data["routine"] = routine
    raw = orjson.dumps(data)
    encoding = "json"
    if len(raw) > PACK_FROM:
        # mtime 0: the gzip header otherwise holds the time of packing, and the same events must give the
        # same report (evidence verify --recompute compares its bytes). Level 1: 30% bigger.
        text, encoding = base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode(), "gzip-base64"
    else:
        text = raw.decode().replace("<", "\\u003c")  # nothing in the data can end its script element
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    limit = ""
    if total > table.num_rows:
        limit = (
            f'<p class="limit">This table holds the first {table.num_rows:,} of {total:,} rows (findings '
            f"needing attention first): a report table stops at {ROW_LIMIT:,} rows. Every row is in "
            f"<code>{escape(csv or '')}</code> beside this report.</p>"
        )
    switch = ""
    if routine:
        switch = (
            f'<label class="switch"><input type="checkbox" id="{tid}-all"> all rows (also the '
            f"{routine['rows']:,} routine {escape(', '.join(routine['values']))} rows)</label>"
        )
    return (
        f'<div class="tools"><input id="{tid}-filter" type="search" placeholder="Search all rows" '
        f'aria-label="Search all rows">{switch}<span id="{tid}-count" class="count"></span></div>'
        f'<div class="tablebox"><table id="{tid}" class="sortable" data-total="{total}"><thead><tr>{head}</tr>'
        f'</thead><tbody></tbody></table></div><div class="pager" id="{tid}-pager"></div>{limit}'
        f'<script type="application/json" id="{tid}-data" data-encoding="{encoding}">{text}</script>'
    )


# -- charts ------------------------------------------------------------------------------------

W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 260, 52, 14, 14, 36
SERIES_GAP = 3.0  # pixels between lines of equal value
MIN_BAR = 3.0  # pixels: the least height of a bar that is not zero, so one denied read among hundreds shows


def _day(text: str) -> str:
    return text[:10]


def _x_labels(days: list[str], x: Any) -> str:
    """Month labels under the axis at the first point of each month, none closer to the one before
    than that one's width (so "Nov 2025" and "Dec" never overlap)."""
    out, last, free_from = [], "", -100.0
    for i, d in enumerate(days):
        month = d[:7]
        if month != last and x(i) >= free_from:
            last = month
            label = datetime.strptime(month, "%Y-%m").strftime("%b %Y" if month.endswith("-01") or not out else "%b")
            if x(i) + 7.0 * len(label) > W:  # would be cut at the right edge
                break
            free_from = x(i) + 7.0 * len(label) + 10  # 11px system-ui: under 7px a character
            out.append(
                f'<line x1="{x(i):.1f}" y1="{H - BOTTOM}" x2="{x(i):.1f}" y2="{H - BOTTOM + 4}" '
                f'stroke="#9aa5b1"/><text class="month" x="{x(i):.1f}" y="{H - BOTTOM + 16}" font-size="11" '
                f'fill="#5f6b7a">{label}</text>'
            )
    return "".join(out)


def _y_axis(lo: float, hi: float, y: Any) -> str:
    span = max(1.0, hi - lo)
    step = next(
        s
        for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 50_000, 100_000, 10**9)
        if span / s <= 6
    )
    out = []
    v = math.ceil(lo / step) * step  # the lowest tick inside the plot
    while v <= hi:
        out.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" stroke="#eef0f3"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end" fill="#5f6b7a">'
            f"{abs(v):,}</text>"
        )
        v += step
    return "".join(out)


def _svg(label: str, body: str) -> str:
    return (
        f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
        f'font-family="system-ui, sans-serif">{body}'
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#9aa5b1"/></svg>'
    )


def _figure(cid: str, title: str, caption: str, svg: str, legend: list[tuple[str, str]]) -> str:
    keys = "".join(f'<span style="--c:{c}">{escape(t)}</span>' for t, c in legend)
    return (
        f'<figure class="chart" id="chart-{cid}"><h3>{escape(title)}</h3><p class="caption">{caption}</p>'
        f'{svg}<div class="legend">{keys}</div></figure>'
    )


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
    caption = (
        "Each line is a tenant; its height is the number of people and service accounts that, at the end of "
        "that day, could read the tenant's cloud credentials (connector secrets), which full control of the "
        "tenant includes. Service accounts of pipelines are expected here; a step up that does not come back "
        "down is access that stayed. Hover a line or a day for names."
    )
    if not days:
        return _figure(
            "privileged",
            title,
            caption,
            _svg(title, '<text x="60" y="120">No privileged access in this period.</text>'),
            [],
        )
    peak: dict[str, int] = {}
    for r in rows:
        peak[r["tenant"]] = max(peak.get(r["tenant"], 0), r["principals"])
    tenants = sorted(peak, key=lambda t: (-peak[t], t))[: len(PALETTE)]
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
    # Tenants with the same count would draw one line over the other: each line is shifted by a
    # few pixels, the first up, the next down, so every one stays visible.
    shift = {t: (k - (len(tenants) - 1) / 2) * SERIES_GAP for k, t in enumerate(tenants)}
    for k, t in enumerate(tenants):
        pts = []
        for i, v in enumerate(values[t]):
            pts.append(f"{x(i - 0.5):.1f},{y(v) + shift[t]:.1f} {x(i + 0.5):.1f},{y(v) + shift[t]:.1f}")
        body.append(
            f'<polyline class="series" fill="none" stroke="{PALETTE[k]}" stroke-width="2" '
            f'points="{" ".join(pts)}"><title>{escape(t)}</title></polyline>'
        )
    step = (W - LEFT - RIGHT) / len(days)
    for i, d in enumerate(days):
        lines = [
            f"{t}: {values[t][i]}" + (f" ({_short(who.get((d, t), ''))})" if values[t][i] else "") for t in tenants
        ]
        body.append(
            f'<rect x="{x(i) - step / 2:.1f}" y="{TOP}" width="{step:.2f}" height="{H - TOP - BOTTOM}" '
            f'fill="transparent"><title>{escape(_day(d))}\n{escape(chr(10).join(lines))}</title></rect>'
        )
    more = (
        f" The {len(tenants)} tenants with the most are drawn; all are in charts/privileged.csv."
        if len(peak) > len(tenants)
        else ""
    )
    return _figure(
        "privileged",
        title,
        caption + more,
        _svg(title, "".join(body)),
        [(t, PALETTE[k]) for k, t in enumerate(tenants)],
    )


def _short(names: str, n: int = 6) -> str:
    parts = [p for p in names.split(", ") if p]
    return ", ".join(parts[:n]) + (f" and {len(parts) - n} more" if len(parts) > n else "")


def _grants_chart(chart: dict[str, Any] | None) -> str:
    title = "Grants and revocations per week"
    rows = (chart or {}).get("rows") or []
    caption = (
        "Above the line: roles given to people, teams and service accounts each week. Below: roles taken "
        "away, and time-bound roles that reached their end date. Grants with no matching removals over "
        "time mean access only grows."
    )
    legend = [("grants", GRANT), ("revocations", REVOKE), ("expiries of time-bound grants", EXPIRE)]
    if not rows:
        return _figure("grants", title, caption, _svg(title, ""), legend)
    up = max(r["grants"] for r in rows)
    down = max(r["revocations"] + r["expiries"] for r in rows)
    hi, lo = max(1, up) * 1.1, -max(1, down) * 1.1
    x, y = _scales(len(rows), lo, hi)
    bw = (W - LEFT - RIGHT) / len(rows) * 0.7
    body = [
        _y_axis(lo, hi, y),
        _x_labels([r["week"] for r in rows], x),
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{W - RIGHT}" y2="{y(0):.1f}" stroke="#5f6b7a"/>',
    ]
    for i, r in enumerate(rows):
        g, rv, ex = r["grants"], r["revocations"], r["expiries"]
        tip = escape(f"Week of {_day(r['week'])}: {g} grants, {rv} revocations, {ex} expiries")
        left = x(i) - bw / 2
        body.append(f'<g class="bar"><title>{tip}</title>')
        if g:
            body.append(
                f'<rect x="{left:.1f}" y="{y(g):.1f}" width="{bw:.1f}" height="{y(0) - y(g):.1f}" fill="{GRANT}"/>'
            )
        if rv:
            body.append(
                f'<rect x="{left:.1f}" y="{y(0):.1f}" width="{bw:.1f}" height="{y(-rv) - y(0):.1f}" fill="{REVOKE}"/>'
            )
        if ex:
            body.append(
                f'<rect x="{left:.1f}" y="{y(-rv):.1f}" width="{bw:.1f}" height="{y(-rv - ex) - y(-rv):.1f}" '
                f'fill="{EXPIRE}"/>'
            )
        body.append("</g>")
    return _figure("grants", title, caption, _svg(title, "".join(body)), legend)


def _secrets_chart(chart: dict[str, Any] | None) -> str:
    title = "Connector-secret accesses per day"
    rows = (chart or {}).get("rows") or []
    caption = (
        "Reads of the cloud credentials held by service connectors, per day: allowed reads above the line, "
        "in blue; reads the platform refused below it, in orange (drawn at least a few pixels high, so a "
        "single one shows). A red marker is a day with a read that <strong>no role authorised</strong> at "
        "that instant; hover it for who, which connector and when."
    )
    legend = [("allowed", ALLOWED), ("denied by the platform", DENIED), ("not authorised by any role", BAD)]
    if not rows:
        return _figure("secrets", title, caption, _svg(title, ""), legend)
    up = max(r["allowed"] for r in rows)
    down = max(r["denied"] for r in rows)
    hi = max(1, up) * 1.25 + 1
    lo = -max(1.0, down, hi * 0.15)  # room below the line for denied reads, even when they are few
    x, y = _scales(len(rows), lo, hi)
    bw = max(1.0, (W - LEFT - RIGHT) / len(rows) * 0.8)
    body = [
        _y_axis(lo, hi, y),
        _x_labels([r["day"] for r in rows], x),
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{W - RIGHT}" y2="{y(0):.1f}" stroke="#5f6b7a"/>',
    ]
    marks = []
    for i, r in enumerate(rows):
        a, d, u = r["allowed"], r["denied"], r["unauthorised"]
        if not (a or d):
            continue
        tip = f"{_day(r['day'])}: {a} allowed, {d} denied" + (f", {u} NOT AUTHORISED: {r['detail']}" if u else "")
        left = x(i) - bw / 2
        bars = []
        if a:
            top = min(y(a), y(0) - MIN_BAR)
            bars.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{bw:.2f}" height="{y(0) - top:.1f}" fill="{ALLOWED}"/>'
            )
        if d:
            height = max(MIN_BAR, y(-d) - y(0))
            bars.append(
                f'<rect class="denied" x="{left:.1f}" y="{y(0):.1f}" width="{bw:.2f}" height="{height:.1f}" '
                f'fill="{DENIED}"/>'
            )
        body.append(f'<g class="bar"><title>{escape(tip)}</title>{"".join(bars)}</g>')
        if u:
            cy = y(a) - 12
            marks.append(
                f'<g class="unauthorised"><title>{escape(tip)}</title>'
                f'<line x1="{x(i):.1f}" y1="{TOP}" x2="{x(i):.1f}" y2="{H - BOTTOM}" stroke="{BAD}" '
                f'stroke-dasharray="3 3"/><circle cx="{x(i):.1f}" cy="{max(TOP + 6, cy):.1f}" r="6" '
                f'fill="{BAD}"/></g>'
            )
            if len(marks) <= 3:
                label = escape(_short(r["detail"] or "", 1).split(" at ")[0])
                anchor = "end" if x(i) > W * 0.7 else "start"
                dx = -10 if anchor == "end" else 10
                marks.append(
                    f'<text x="{x(i) + dx:.1f}" y="{max(TOP + 10, cy + 4):.1f}" font-size="12" '
                    f'fill="{BAD}" text-anchor="{anchor}" font-weight="600" stroke="#fff" stroke-width="4" '
                    f'paint-order="stroke">{label}</text>'
                )
    return _figure("secrets", title, caption, _svg(title, "".join(body + marks)), legend)
