"""The pages as HTML built in Python: every value that is not a literal of this file goes through `e()`."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

PAGE_SIZE = 50


def e(value: Any) -> str:
    """A value as HTML text or attribute content (quotes escaped too)."""
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, *, who: str | None = None, csrf: str | None = None, scopes=(), message=None) -> str:
    nav = ""
    if who is not None:
        links = ['<a href="/web/">My items</a>', '<a href="/web/owner">Campaigns I run</a>']
        if "audit" in scopes:
            links.append('<a href="/report">Live report</a>')
        nav = (
            f'<nav aria-label="Pages">{" | ".join(links)}</nav>'
            f'<span class="who">Signed in as <strong>{e(who)}</strong></span>'
            f'<form class="inline" method="post" action="/web/signout">{hidden("csrf", csrf)}'
            '<button type="submit">Sign out</button></form>'
        )
    msg = ""
    if message is not None:
        kind, text = message
        role = "alert" if kind == "error" else "status"
        msg = f'<p class="msg {e(kind)}" role="{role}" id="message">{e(text)}</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)} · access-ledger</title><link rel="stylesheet" href="/web/static/web.css">'
        '<link rel="icon" href="data:,">'
        '<script src="/web/static/web.js" defer></script></head>'
        f"<body><header><strong>Access reviews</strong>{nav}</header><main><h1>{e(title)}</h1>{msg}{body}</main>"
        "</body></html>"
    )


def hidden(name: str, value: Any) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def signin(pre: str) -> str:
    return (
        '<form method="post" action="/web/signin"><fieldset><legend>Sign in with your review token</legend>'
        f'{hidden("csrf", pre)}<p><label for="token">Token</label>'
        '<input type="password" id="token" name="token" autocomplete="off" required size="60"></p>'
        '<p class="muted">Ask the ledger\'s administrator for a token with the review scope '
        "(<code>access-ledger token create --scope review</code>).</p>"
        '<button class="primary" type="submit">Sign in</button></fieldset></form>'
    )


def _when(at: str | None) -> str:
    return e(at[:10]) if at else ""


def _grant(r: dict[str, Any]) -> str:
    g = r.get("grant")
    parts = []
    if g:
        why = f": “{e(g['reason'])}”" if g["reason"] else " (no reason given)"
        parts.append(f"Granted by {e(g['actor'])} on {_when(g['at'])}{why}")
    m = r.get("membership")
    if m:
        why = f": “{e(m['reason'])}”" if m["reason"] else " (no reason given)"
        parts.append(f"Added to team {e(r['via'])} by {e(m['actor'])} on {_when(m['at'])}{why}")
    return "<br>".join(parts)


def _access(r: dict[str, Any]) -> str:
    out = f"<strong>{e(r['role'])}</strong> in tenant <strong>{e(r['tenant'])}</strong>"
    if r["resource"]:
        out += f"<br>only on {e(r['resource'])}"
    if r["via"]:
        out += f"<br>through team {e(r['via'])}"
    if r["privileged"]:
        out += ' <span class="tag priv">privileged</span>'
    if r["expires_at"]:
        out += f"<br>expires {_when(r['expires_at'])}"
    return out


def _perms(r: dict[str, Any]) -> str:
    perms = r.get("permissions") or []
    shown = "".join(f"<li>{e(p)}</li>" for p in perms[:30])
    more = f"<li>… and {len(perms) - 30} more</li>" if len(perms) > 30 else ""
    return f'<ul class="perms">{shown}{more}</ul>'


def _decided(d: dict[str, Any]) -> str:
    word = "Kept" if d["decision"] == "keep" else "Revoked"
    why = f": “{e(d['reason'])}”" if d.get("reason") else ""
    batch = " (in a batch)" if d.get("batch") else ""
    return f"<strong>{word}</strong> by {e(d['actor'])} on {_when(d.get('at'))}{batch}{why}"


def items_page(
    campaign: str | None,
    choices: list[str],
    tenants: list[str],
    filters: dict[str, str],
    rows: list[dict[str, Any]],
    total_mine: int,
    page: int,
    decisions: dict[int, dict[str, Any]],
    together: dict[int, list[int]],
    csrf: str,
) -> str:
    if campaign is None:
        return "<p>No open review campaign has items for you. Nothing to do.</p>"
    opts = "".join(f'<option value="{e(n)}"{" selected" if n == campaign else ""}>{e(n)}</option>' for n in choices)
    topts = '<option value="">all tenants</option>' + "".join(
        f'<option value="{e(t)}"{" selected" if t == filters.get("tenant") else ""}>{e(t)}</option>' for t in tenants
    )

    def box(name: str, text: str) -> str:
        on = " checked" if filters.get(name) else ""
        return f'<input type="checkbox" id="f-{name}" name="{name}" value="1"{on}><label for="f-{name}">{text}</label>'

    form = (
        '<form method="get" action="/web/" role="search"><fieldset><legend>Show</legend>'
        f'<label for="f-campaign">Campaign</label><select id="f-campaign" name="campaign">{opts}</select> '
        f'<label for="f-tenant">Tenant</label><select id="f-tenant" name="tenant">{topts}</select> '
        f'<label for="f-principal">Person or account</label><input type="text" id="f-principal" name="principal" '
        f'value="{e(filters.get("principal", ""))}" size="18"> '
        f'<label for="f-q">Search</label><input type="search" id="f-q" name="q" value="{e(filters.get("q", ""))}" '
        'size="18"> '
        f"{box('privileged', 'Privileged only')} {box('undecided', 'Undecided only')} "
        '<button type="submit">Show</button></fieldset></form>'
    )
    start = (page - 1) * PAGE_SIZE
    shown = rows[start : start + PAGE_SIZE]
    undecided = sum(1 for r in rows if r["item"] not in decisions)
    summary = (
        f'<p id="summary">{len(rows)} of your {total_mine} items in campaign <strong>{e(campaign)}</strong> '
        f"match ({undecided} undecided)" + (f"; showing {start + 1}–{start + len(shown)}" if shown else "") + ".</p>"
    )
    back = urlencode({k: v for k, v in {**filters, "campaign": campaign, "page": str(page)}.items() if v})
    batch = (
        '<form id="batch" method="post" action="/web/batch/confirm"><fieldset><legend>Decide the selected items '
        f"together</legend>{hidden('csrf', csrf)}{hidden('campaign', campaign)}{hidden('back', back)}"
        '<span id="select-all-wrap" hidden><input type="checkbox" id="select-all">'
        '<label for="select-all">Select every item on this page</label></span> '
        '<input type="radio" id="b-keep" name="decision" value="keep" required><label for="b-keep">Keep</label>'
        '<input type="radio" id="b-revoke" name="decision" value="revoke"><label for="b-revoke">Revoke</label> '
        '<label for="b-reason">Reason</label><input type="text" id="b-reason" name="reason" size="30"> '
        '<button type="submit">Review the selection…</button></fieldset></form>'
    )
    body_rows = []
    for r in shown:
        n = r["item"]
        d = decisions.get(n)
        flags = ""
        if r["deactivated"]:
            flags += ' <span class="tag warn">deactivated</span>'
        if r.get("conflicted"):
            flags += f' <span class="tag warn">you may not decide this: {e(r["conflicted"])}</span>'
        sod = "".join(f'<span class="tag warn">{e(x)}</span> ' for x in r.get("sod_conflicts") or []) or "none"
        used = _when(r.get("last_used")) or "never used"
        group = (
            f'<p class="muted">Same team membership as item{"s" if len(together[n]) > 1 else ""} '
            f"{', '.join(str(x) for x in together[n])}: decide them the same.</p>"
            if together.get(n)
            else ""
        )
        if d:
            cell = _decided(d)
        else:
            cell = (
                f'<form method="post" action="/web/decide">{hidden("csrf", csrf)}{hidden("campaign", campaign)}'
                f'{hidden("item", n)}{hidden("back", back)}<label for="reason-{n}">Reason for item {n}</label> '
                f'<input type="text" id="reason-{n}" name="reason"> '
                f'<button type="submit" name="decision" value="keep" id="keep-{n}">Keep</button> '
                f'<button type="submit" name="decision" value="revoke" class="danger" id="revoke-{n}">Revoke</button>'
                "</form>"
            )
        select = (
            ""
            if d
            else f'<input type="checkbox" class="select-item" form="batch" name="item" value="{n}" id="sel-{n}">'
            f'<label for="sel-{n}">Select item {n}</label>'
        )
        body_rows.append(
            f'<tr id="item-{n}"><td>{n}<br>{select}</td><td>{e(r["principal"])}{flags}</td><td>{_access(r)}</td>'
            f"<td>{_perms(r)}</td><td>{used}</td><td>{sod}</td><td>{_grant(r)}{group}</td>"
            f'<td class="decide">{cell}</td></tr>'
        )
    table = (
        '<table id="items"><caption class="muted">Last use is before the campaign started. Keeping a privileged '
        "item, and every revoke, needs a reason.</caption><thead><tr><th>Item</th><th>Who</th><th>Access</th>"
        "<th>Permissions</th><th>Last used</th><th>Separation-of-duties conflicts</th><th>Granted by, and why</th>"
        f"<th>Decision</th></tr></thead><tbody>{''.join(body_rows)}</tbody></table>"
    )
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    nav = []
    base = {k: v for k, v in {**filters, "campaign": campaign}.items() if v}
    if page > 1:
        nav.append(f'<a href="/web/?{e(urlencode({**base, "page": page - 1}))}" rel="prev">Previous page</a>')
    nav.append(f"<span>Page {page} of {pages}</span>")
    if page < pages:
        nav.append(f'<a href="/web/?{e(urlencode({**base, "page": page + 1}))}" rel="next">Next page</a>')
    pager = f'<nav class="pager" aria-label="Pages of items">{"".join(nav)}</nav>'
    return form + summary + batch + table + pager


def batch_confirm(campaign: str, chosen: list[dict[str, Any]], decision: str, reason: str, back: str, csrf: str):
    word = "keep" if decision == "keep" else "revoke"
    lis = "".join(
        f"<li>Item {r['item']}: {e(r['principal'])}, {e(r['role'])} in {e(r['tenant'])}"
        + (f" on {e(r['resource'])}" if r["resource"] else "")
        + (" (privileged)" if r["privileged"] else "")
        + "</li>"
        for r in chosen
    )
    items = "".join(hidden("item", r["item"]) for r in chosen)
    why = f"“{e(reason)}”" if reason else "no reason"
    return (
        f'<p id="confirm-what">You are about to <strong>{word}</strong> these {len(chosen)} items of campaign '
        f"<strong>{e(campaign)}</strong>, with {why}. They are recorded together as one batch.</p>"
        f"<ul>{lis}</ul>"
        f'<form method="post" action="/web/batch">{hidden("csrf", csrf)}{hidden("campaign", campaign)}'
        f"{hidden('decision', decision)}{hidden('reason', reason)}{hidden('back', back)}{items}"
        f'<button class="primary" type="submit" id="confirm">Record these {len(chosen)} decisions</button> '
        f'<a href="/web/?{e(back)}">Go back without recording</a></form>'
    )


def owner_page(owned: list[dict[str, Any]], reviewers: list[str], csrf: str) -> str:
    if not owned:
        return "<p>You run no open review campaign.</p>"
    out = ['<datalist id="reviewers">' + "".join(f'<option value="{e(r)}">' for r in reviewers) + "</datalist>"]
    for i, o in enumerate(owned):
        name = o["name"]
        rows = "".join(
            f"<tr><td>{e(p['reviewer'])}</td><td>{p['items']}</td><td>{p['decided']}</td><td>{p['open']}</td>"
            f"<td>{p['overdue']}</td><td>{p['batch']}</td></tr>"
            for p in o["per"]
        )
        due = f"due {_when(o['due'])}" if o["due"] else "no due date"
        status = "overdue" if o["overdue"] else "open"
        out.append(
            f'<section aria-labelledby="c-{i}"><h2 id="c-{i}">Campaign {e(name)}</h2>'
            f'<p class="progress">{o["decided"]} of {o["items"]} items decided; {status}, {due}; '
            f"{o['overdue_items']} overdue items; "
            + (f"{o['batch_share']} of decisions made in batches" if o["decided"] else "no decisions yet")
            + ".</p>"
            '<table class="progress-table"><thead><tr><th>Reviewer</th><th>Items</th><th>Decided</th><th>Open</th>'
            f"<th>Overdue</th><th>Decided in a batch</th></tr></thead><tbody>{rows}</tbody></table>"
            f'<form method="post" action="/web/reassign"><fieldset><legend>Give items to another reviewer</legend>'
            f"{hidden('csrf', csrf)}{hidden('campaign', name)}"
            f'<label for="ra-items-{i}">Item numbers</label><input type="text" id="ra-items-{i}" name="items" '
            f'placeholder="e.g. 3, 7" required> <label for="ra-to-{i}">New reviewer</label>'
            f'<input type="text" id="ra-to-{i}" name="to" list="reviewers" required placeholder="user:NAME"> '
            f'<label for="ra-reason-{i}">Reason</label><input type="text" id="ra-reason-{i}" name="reason" required> '
            '<button type="submit">Reassign</button></fieldset></form>'
            f'<form method="post" action="/web/close/preview"><fieldset><legend>Close the campaign</legend>'
            f"{hidden('csrf', csrf)}{hidden('campaign', name)}"
            f"<p>{o['items'] - o['decided']} items are undecided. What do they come to?</p>"
            f'<input type="radio" id="cl-revoke-{i}" name="undecided" value="revoke" required>'
            f'<label for="cl-revoke-{i}">Revoke them</label> '
            f'<input type="radio" id="cl-keep-{i}" name="undecided" value="keep"><label for="cl-keep-{i}">Keep them'
            f'</label> <input type="radio" id="cl-exception-{i}" name="undecided" value="exception">'
            f'<label for="cl-exception-{i}">Leave them undecided (reported as exceptions)</label> '
            f'<label for="cl-reason-{i}">Reason</label><input type="text" id="cl-reason-{i}" name="reason"> '
            '<button type="submit">Show what closing records…</button></fieldset></form></section>'
        )
    return "".join(out)


UNDECIDED_WORDS = {"revoke": "revoked", "keep": "kept", "exception": "left undecided (exceptions)"}


def close_confirm(campaign: str, undecided: str, reason: str, removed: list[dict[str, Any]], csrf: str) -> str:
    lis = "".join(
        "<li>"
        + (
            f"Remove role {e(ev['role'])} from {e(ev['principal'])}"
            + (f" in tenant {e(ev['tenant'])}" if ev.get("tenant") else "")
            + (f" on {e(ev['resource'])}" if ev.get("resource") else "")
            if ev["type"] == "RoleUnassigned"
            else f"Remove {e(ev['member'])} from team {e(ev['team'])}"
        )
        + f' <span class="muted">({e(ev["reason"])})</span></li>'
        for ev in removed
    )
    what = f'<ol id="removals">{lis}</ol>' if removed else '<p id="removals">No access is removed.</p>'
    return (
        f"<p>Closing campaign <strong>{e(campaign)}</strong> with undecided items "
        f"{UNDECIDED_WORDS[undecided]} records these {len(removed)} removals:</p>{what}"
        f'<form method="post" action="/web/close">{hidden("csrf", csrf)}{hidden("campaign", campaign)}'
        f"{hidden('undecided', undecided)}{hidden('reason', reason)}{hidden('expected', len(removed))}"
        '<button class="primary" type="submit" id="confirm-close">Close the campaign and record them</button> '
        '<a href="/web/owner">Go back without closing</a></form>'
    )
