"""A person's history: every event by or about one principal, time-ordered, each with how it concerns them.

Read from the log as `export` reads it, one pass in position order. "About" means: the event names the
principal (its account, a grant to it, its team memberships, a token of its), a grant to or removal from a
team while the principal is a member of it (that is how team access reaches a person), a review campaign
in which it is a reviewer, and the review items about it with their decisions (items re-derived from the
log and checked against the campaign's start event, as `review items` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

from ledger.vocabulary import split_principal

if TYPE_CHECKING:
    from ledger.app import AccessLedger

COLUMNS = ["position", "at", "type", "concerns", "actor", "detail", "reason", "id"]
_ACCOUNT_FIELD = {"user": "user", "service_account": "service_account", "team": "team"}
_SKIP = ("type", "at", "actor", "reason", "id")


def _detail(ev: dict[str, Any]) -> str:
    """The event's own fields as `key=value`, in its canonical order (lists joined by commas)."""
    parts = []
    for k, v in ev.items():
        if k in _SKIP or v is None or v == [] or v is False:
            continue
        parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def history(
    led: AccessLedger,
    principal: str,
    start: str | None = None,
    end: str | None = None,
    types: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows of `history PRINCIPAL` between two instants (inclusive; default: all of the log), of `types`
    only when given."""
    kind, name = split_principal(principal)
    first, last = led.positions_between(start, end)
    rows = list(_scan(led, principal, kind, name, first, last))
    rows += _review_items(led, principal, first, last)
    rows.sort(key=lambda r: (r["position"], r["concerns"]))
    return rows if types is None else [r for r in rows if r["type"] in types]


def _scan(led: AccessLedger, principal: str, kind: str, name: str, first: int, last: int) -> Iterator[dict[str, Any]]:
    teams: set[str] = set()  # the teams the principal belongs to at the event being read
    team_grants: dict[str, dict[tuple[Any, ...], str]] = {}  # what each team holds: a member gets it all
    tokens: set[str] = set()
    field = _ACCOUNT_FIELD[kind]
    # Membership before `first` matters too (a grant to one of its teams inside the range), so the scan
    # starts at the beginning and only reports from `first`; before it, only changes can matter (uses are
    # the bulk of a log and are not reported there).
    for pos, ev in chain(led.read_changes(1, first - 1) if first > 1 else (), led.read(first, last)):
        t = ev["type"]
        concerns: list[str] = []
        if ev.get("actor") == principal:
            concerns.append("by")
        if ev.get(field) == name and (
            t.startswith(("User", "ServiceAccount", "Team"))
            and field != "team"
            or field == "team"
            and t.startswith("Team")
        ):
            concerns.append("account")
        if ev.get("principal") == principal:
            concerns.append("token" if t == "TokenIssued" else "subject")
        if ev.get("member") == principal:
            concerns.append("membership")
        if t == "TokenIssued" and ev.get("principal") == principal:
            tokens.add(ev["token_id"])
        elif t == "TokenRevoked" and ev.get("token_id") in tokens:
            concerns.append("token")
        if t in ("ReviewStarted", "ReviewDecided", "ReviewReassigned") and (
            ev.get("reviewer") == principal
            or ev.get("fallback_reviewer") == principal
            or any(r.split("=", 1)[1] == principal for r in ev.get("reviewers", []))
        ):
            concerns.append("reviewer")
        team = ev.get("principal") if t in ("RoleAssigned", "RoleUnassigned") else None
        if team and team.startswith("team:") and team.split(":", 1)[1] in teams:
            concerns.append(f"via {team}")
        if t == "TeamDeleted" and ev.get("team") in teams and kind != "team":
            concerns.append(f"via team:{ev['team']}")
        if t in ("RoleAssigned", "RoleUnassigned") and str(ev.get("principal", "")).startswith("team:"):
            held = team_grants.setdefault(ev["principal"].split(":", 1)[1], {})
            key = (ev["role"], ev.get("tenant"), ev.get("resource"))
            if t == "RoleAssigned":
                held[key] = (
                    ev["role"]
                    + (f" in {ev['tenant']}" if ev.get("tenant") else " in the organization")
                    + (f" on {ev['resource']}" if ev.get("resource") else "")
                )
            else:
                held.pop(key, None)
        detail = None
        if t == "TeamMemberAdded" and ev.get("member") == principal:
            gives = sorted(team_grants.get(ev["team"], {}).values())
            detail = _detail(ev) + (f" gives: {'; '.join(gives)}" if gives else " gives: no role yet")
        # membership changes take effect after the event that makes them
        if t == "TeamMemberAdded" and ev.get("member") == principal:
            teams.add(ev["team"])
        elif t == "TeamMemberRemoved" and ev.get("member") == principal:
            teams.discard(ev["team"])
        elif t == "TeamDeleted":
            teams.discard(ev["team"])
        if concerns and pos >= first:
            yield _row(pos, ev, ", ".join(dict.fromkeys(concerns)), detail)


def _row(pos: int, ev: dict[str, Any], concerns: str, detail: str | None = None) -> dict[str, Any]:
    return {
        "position": pos,
        "at": ev["at"],
        "type": ev["type"],
        "concerns": concerns,
        "actor": ev["actor"],
        "detail": detail if detail is not None else _detail(ev),
        "reason": ev.get("reason"),
        "id": ev.get("id"),
    }


def _review_items(led: AccessLedger, principal: str, first: int, last: int) -> list[dict[str, Any]]:
    """The campaigns' items about the principal: the start that made each item, and each decision on it."""
    from projections.pit import Timeline
    from projections.reviews import campaigns, derive

    found = [c for c in campaigns(led).values() if c.start_position <= last]
    if not found:
        return []
    timeline = Timeline(led)
    rows: list[dict[str, Any]] = []
    for c in found:
        items = [r for r in derive(led, c, timeline) if r["principal"] == principal]
        for r in items:
            what = (
                f"campaign={c.name} item={r['item']} role={r['role']}"
                + (f" tenant={r['tenant']}" if r["tenant"] else " organization")
                + (f" via={r['via']}" if r["via"] else "")
                + f" reviewer={r['reviewer']}"
            )
            if first <= c.start_position <= last:
                rows.append(_row(c.start_position, c.start, "review item", what))
            d = c.decisions.get(r["item"])
            pos = c.decided_at.get(r["item"])
            if d is not None and pos is not None and first <= pos <= last:
                rows.append(_row(pos, d, "review decision", f"{what} decision={d['decision']}"))
    return rows
