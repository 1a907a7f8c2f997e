"""Access review campaigns read from the log: the population, who reviews what, decisions, close.

The population is never stored: it is re-derived from the permission state at the position its
ReviewStarted event records and checked against the item count and SHA-256 recorded there, on
every use (an edit of anything but the chained events changes no answer, DESIGN section 5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ledger import errors as E
from projections.permissions import PermissionState

if TYPE_CHECKING:
    from ledger.app import AccessLedger

REVIEW_TYPES = ("ReviewStarted", "ReviewDecided", "ReviewReassigned", "ReviewClosed")
#: Actions that make an assignment privileged (beyond creating, reading and using).
PRIVILEGED_ACTIONS = frozenset({"*", "read_secret_value", "delete", "update", "backup_restore", "write"})
#: The population's facts, in the order they are hashed.
FACTS = (
    "item",
    "principal",
    "role",
    "tenant",
    "resource",
    "via",
    "expires_at",
    "privileged",
    "principal_kind",
    "deactivated",
)
#: What a reviewer sees beside the facts, found at the start position too but never hashed.
CONTEXT = ("permissions", "last_used", "sod_conflicts")
_USAGE_PREFIXES = (b'{"type":"ResourceAccessed"', b'{"type":"ConnectorSecretAccessed"')


@dataclass
class Campaign:
    name: str
    start_position: int
    start: dict[str, Any]
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    decided_at: dict[int, int] = field(default_factory=dict)
    close: dict[str, Any] | None = None
    close_position: int | None = None
    reassignments: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (position, event), in log order
    #: Item numbers per (team, member): the items one team membership gives (filled on first use).
    memberships: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False, compare=False)


def shared_membership(c: Campaign, items: list[dict[str, Any]], r: dict[str, Any]) -> list[int]:
    """The other items that come from the same team membership as item `r` (a revoke of one removes
    the membership, and with it all of them)."""
    if not r["via"]:
        return []
    if not c.memberships:
        for x in items:
            if x["via"]:
                c.memberships.setdefault((x["via"], x["principal"]), []).append(x["item"])
    return [n for n in c.memberships.get((r["via"], r["principal"]), ()) if n != r["item"]]


def population(state: PermissionState, instant: str, tenants: list[str], privileged_only: bool) -> list[dict[str, Any]]:
    """One item per assignment in force in `tenants` at `instant` (team assignments: one per member)."""
    scope = set(tenants)
    privileged_of: dict[str, bool] = {}  # per role, not per assignment: a few hundred roles, 100k assignments
    rows: list[dict[str, Any]] = []
    for a in state.assignments.values():
        if a.tenant not in scope or not a.in_force(instant) or a.role not in state.roles:
            continue
        privileged = privileged_of.get(a.role)
        if privileged is None:
            privileged = privileged_of[a.role] = any(
                p.split(":", 1)[1] in PRIVILEGED_ACTIONS for p, _, _ in state.effective_permissions(a.role)
            )
        if privileged_only and not privileged:
            continue
        role, tenant, resource, expires_at = a.role, a.tenant, a.resource, a.expires_at
        if a.principal.startswith("team:"):
            team = a.principal.split(":", 1)[1]
            if not state.teams.get(team, False):
                continue
            for member, src in state.members.get(team, {}).items():
                rows.append(
                    {
                        "role": role,
                        "tenant": tenant,
                        "resource": resource,
                        "expires_at": expires_at,
                        "privileged": privileged,
                        "granted_by": a.source.actor,
                        "principal": member,
                        "via": team,
                        "added_by": src.actor,
                    }
                )
        else:
            rows.append(
                {
                    "role": role,
                    "tenant": tenant,
                    "resource": resource,
                    "expires_at": expires_at,
                    "privileged": privileged,
                    "granted_by": a.source.actor,
                    "principal": a.principal,
                    "via": None,
                    "added_by": None,
                }
            )
    rows.sort(key=lambda r: (r["principal"], r["role"], r["tenant"], r["resource"] or "", r["via"] or ""))
    active = state.principals
    for n, r in enumerate(rows, 1):
        r["item"] = n
        r["principal_kind"] = "service_account" if r["principal"].startswith("service_account:") else "person"
        r["deactivated"] = not active.get(r["principal"], False)
    return rows


def population_sha256(items: list[dict[str, Any]]) -> str:
    """SHA-256 of the population: one compact JSON array of its facts per item, newline-terminated."""
    h = hashlib.sha256()
    for r in items:
        h.update(orjson.dumps([r[f] for f in FACTS]) + b"\n")
    return h.hexdigest()


def route(
    items: list[dict[str, Any]], state: PermissionState, reviewer: str, reviewers: list[str], fallback: str | None
) -> None:
    """Set each item's reviewer: its team's, else the campaign's; the fallback when that one is conflicted."""
    per_team = dict(pair.split("=", 1) for pair in reviewers)
    of_teams: dict[str, str | None] = {}  # principal -> the reviewer of its first team that has one
    for r in items:
        chosen = per_team.get(f"team:{r['via']}") if r["via"] else None
        if chosen is None and per_team:
            principal = r["principal"]
            if principal not in of_teams:
                of_teams[principal] = next(
                    (
                        per_team[f"team:{t}"]
                        for t in sorted(state.teams_of.get(principal, ()))
                        if f"team:{t}" in per_team
                    ),
                    None,
                )
            chosen = of_teams[principal]
        chosen = chosen or reviewer
        why = conflict(r, chosen)
        if why and fallback and not conflict(r, fallback):
            chosen, why = fallback, None
        r["reviewer"] = chosen
        r["conflicted"] = why


def conflict(item: dict[str, Any], reviewer: str) -> str | None:
    """Why `reviewer` may not decide `item`, or None."""
    if item["principal"] == reviewer:
        return "it is about their own access"
    if reviewer in (item["granted_by"], item["added_by"]):
        return "it is a grant they made themselves"
    return None


def campaigns(
    led: AccessLedger, start: int = 1, stop: int | None = None, into: dict[str, Campaign] | None = None
) -> dict[str, Campaign]:
    """Every campaign in the log, in start order (with `into`: those folded so far, brought on from `start`)."""
    out: dict[str, Campaign] = {} if into is None else into
    # Readers other than the ledger (a bundle's events) take no range: the whole log is read then.
    for pos, ev in led.read_changes(start, stop) if (start, stop) != (1, None) else led.read_changes():
        t = ev["type"]
        if t == "ReviewStarted":
            out[ev["campaign"]] = Campaign(ev["campaign"], pos, ev)
        elif t == "ReviewDecided":
            out[ev["campaign"]].decisions[ev["item"]] = ev
            out[ev["campaign"]].decided_at[ev["item"]] = pos
        elif t == "ReviewReassigned":
            out[ev["campaign"]].reassignments.append((pos, ev))
        elif t == "ReviewClosed":
            out[ev["campaign"]].close = ev
            out[ev["campaign"]].close_position = pos
    return out


def campaign(led: AccessLedger, name: str) -> Campaign:
    found = campaigns(led)
    if name not in found:
        known = ", ".join(sorted(found)[:5]) or "none yet"
        raise E.UnknownEntity(f"unknown review campaign {name!r} (campaigns: {known})")
    return found[name]


def derive(
    led: AccessLedger,
    c: Campaign,
    timeline: Any = None,
    *,
    context: bool = False,
    sod_rules: Sequence[tuple[str, str, str]] = (),
) -> list[dict[str, Any]]:
    """The campaign's items re-derived from the log at its start position, checked against the start event,
    each with its reviewer (as routed at the start, then as reassigned) and, with `context`, what a
    reviewer needs beside the facts (CONTEXT), conflicts judged by `sod_rules` (id, left, right)."""
    from projections.pit import Timeline, _quiet_gc

    s = c.start
    state = (timeline or Timeline(led)).at_position(s["as_of_position"])
    items = population(state, s["at"], s["tenants"], s["privileged_only"])
    if len(items) != s["items"] or population_sha256(items) != s["population_sha256"]:
        raise E.IntegrityFailure(
            f"review campaign {c.name!r}: the population re-derived at position "
            f"{s['as_of_position']} does not match its start event (count or SHA-256): "
            "run `access-ledger verify`"
        )
    route(items, state, s["reviewer"], s.get("reviewers", []), s.get("fallback_reviewer"))
    for _, ev in c.reassignments:
        for n in ev["items"]:
            items[n - 1]["reviewer"] = ev["reviewer"]
            items[n - 1]["conflicted"] = conflict(items[n - 1], ev["reviewer"])
    if context:
        with _quiet_gc():  # many small objects, no cycles, beside the large state
            add_context(led, items, state, s["at"], s["as_of_position"], sod_rules)
    return items


def add_context(
    led: AccessLedger,
    items: list[dict[str, Any]],
    state: PermissionState,
    instant: str,
    position: int,
    sod_rules: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Set each item's permissions, last use and separation-of-duties conflicts as of `position`.

    A principal holds in a tenant exactly what its items there give (the population is every
    assignment in force), unless deactivated (then it holds nothing, as `audit sod` says); what it
    holds in the organization comes from the organization's assignments (few), read once.
    """
    from ledger.vocabulary import vocabulary

    scoped = {(r["principal"], r["tenant"], r["resource"]) for r in items if r["resource"]}
    uses = last_uses(led, {r["principal"] for r in items}, {r["tenant"] for r in items}, scoped, position)
    org_types = vocabulary(state.preset).org_types if state.preset else ()
    rules = [
        (rule_id, (left, left.split(":", 1)[0] in org_types), (right, right.split(":", 1)[0] in org_types))
        for rule_id, left, right in sod_rules
    ]
    sides = {side for _, left, right in rules for side, _ in (left, right)}
    perms_of: dict[tuple[str, str | None], tuple[list[str], frozenset[str]]] = {}

    def permissions(role: str, resource: str | None) -> tuple[list[str], frozenset[str]]:
        """The role's permissions on the resource (all, without one), and the rule sides they cover."""
        scope_type = resource.split("/", 1)[0] if resource else None
        if (role, scope_type) not in perms_of:
            perms = sorted(
                {
                    p
                    for p, _, _ in state.effective_permissions(role)
                    if scope_type is None or p.split(":", 1)[0] in ("*", scope_type)
                }
            )
            perms_of[(role, scope_type)] = perms, frozenset(s for s in sides if _covered(s, set(perms)))
        return perms_of[(role, scope_type)]

    held: dict[tuple[str, str | None], set[str]] = {}  # (principal, tenant or None) -> rule sides held
    for a in state.assignments.values():
        if a.tenant is not None or not a.in_force(instant) or a.role not in state.roles:
            continue
        team = a.principal.split(":", 1)[1] if a.principal.startswith("team:") else None
        holders = (state.members.get(team, {}) if state.teams.get(team, False) else ()) if team else (a.principal,)
        for h in holders:
            if state.principals.get(h, False):
                held.setdefault((h, None), set()).update(permissions(a.role, a.resource)[1])
    for r in items:
        perms, covered = permissions(r["role"], r["resource"])
        r["permissions"] = perms
        granted = set(perms)
        used = uses.get((r["principal"], r["tenant"], r["resource"]), {})
        r["last_used"] = max((at for use, at in used.items() if _covered(use, granted)), default=None)
        mine = held.setdefault((r["principal"], r["tenant"]), set())
        if not r["deactivated"]:
            mine |= covered
    for r in items:
        where = {False: held[(r["principal"], r["tenant"])], True: held.get((r["principal"], None), set())}
        r["sod_conflicts"] = [
            rule
            for rule, (left, left_org), (right, right_org) in rules
            if not (left_org and right_org) and left in where[left_org] and right in where[right_org]
        ]


def _covered(permission: str, granted: set[str]) -> bool:
    """True if one of the `granted` permissions (wildcards count) covers `permission` (TYPE:ACTION)."""
    rtype, action = permission.split(":", 1)
    return bool(granted & {permission, f"*:{action}", f"{rtype}:*", "*:*"})


def last_uses(
    led: AccessLedger, principals: set[str], tenants: set[str | None], scoped: set[tuple[str, str, str]], position: int
) -> dict[tuple[str, str | None, str | None], dict[str, str]]:
    """The last allowed use of each TYPE:ACTION up to `position`, per (principal, tenant, None)
    and, for the resources in `scoped`, per (principal, tenant, resource): one read of the log."""
    out: dict[tuple[str, str | None, str | None], dict[str, str]] = {}
    loads = orjson.loads
    for _, data in led.read_bytes(1, position):
        if not data.startswith(_USAGE_PREFIXES):
            continue
        ev = loads(data)
        principal, tenant = ev["principal"], ev.get("tenant")
        if ev["outcome"] != "allowed" or principal not in principals or tenant not in tenants:
            continue
        if ev["type"] == "ResourceAccessed":
            resource = ev["resource"]
            use = f"{resource.split('/', 1)[0]}:{ev['action']}"
        else:
            resource, use = f"service_connector/{ev['connector']}", "service_connector:read_secret_value"
        out.setdefault((principal, tenant, None), {})[use] = ev["at"]  # times never decrease along positions
        if scoped and (principal, tenant, resource) in scoped:
            out.setdefault((principal, tenant, resource), {})[use] = ev["at"]
    return out


def start_event(
    led: AccessLedger,
    name: str,
    tenants: list[str],
    reviewer: str,
    reviewers: list[str],
    fallback: str | None,
    privileged_only: bool,
    due: str | None,
    at: str | None,
    actor: str,
    reason: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ReviewStarted event for a campaign starting now (at the head), and its items."""
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline

    # Refused early, before the population is built; the write model refuses it again at the append,
    # so the names come from it rather than from reading every change event of the log.
    if any(c["name"] == name for c in led.entities("campaign")):
        raise E.DuplicateEntity(f"review campaign {name!r} already exists")
    position = led.head()
    state = Timeline(led).at_position(position)
    # An explicit time (never re-stamped at write): the population is in force at exactly this instant.
    instant = at or max(format_instant(now()), led.newest_at() or "")
    for t in tenants:
        if t not in state.tenants:
            raise E.UnknownEntity(f"unknown tenant {t!r}")
    items = population(state, instant, tenants, privileged_only)
    route(items, state, reviewer, reviewers, fallback)
    for r in items:
        if r["conflicted"]:
            # A fallback that may not decide it either is named too, or the advice would be to give one.
            other = (
                f", nor may the fallback {fallback} ({conflict(r, fallback)}): name another --fallback-reviewer"
                if fallback
                else "; give --fallback-reviewer"
            )
            raise E.ReviewRefused(
                f"item {r['item']} ({r['principal']}, {r['role']} in {r['tenant']}) has no reviewer "
                f"who may decide it: {r['reviewer']} may not ({conflict(r, r['reviewer'])}){other}"
            )
    event = {
        "type": "ReviewStarted",
        "at": instant,
        "actor": actor,
        "campaign": name,
        "tenants": tenants,
        "reviewer": reviewer,
        "reviewers": reviewers,
        "fallback_reviewer": fallback,
        "privileged_only": privileged_only,
        "due": due,
        "as_of_position": position,
        "items": len(items),
        "population_sha256": population_sha256(items),
    }
    if reason:
        event["reason"] = reason
    return {k: v for k, v in event.items() if v is not None}, items


def decision_event(
    c: Campaign, items: list[dict[str, Any]], item: int, decision: str, reason: str | None, actor: str
) -> dict[str, Any]:
    """The ReviewDecided event for `actor` deciding `item`, or the rule that refuses it."""
    if c.close is not None:
        raise E.ReviewRefused(f"review campaign {c.name!r} is closed: no decision after close")
    if not 1 <= item <= len(items):
        raise E.ReviewRefused(f"item {item} is not an item of review campaign {c.name!r} (it has {len(items)})")
    r = items[item - 1]
    why = conflict(r, actor)
    if why:
        raise E.ReviewRefused(
            f"{actor} may not decide item {item} of review campaign {c.name!r}: {why} "
            "(it goes to the fallback reviewer)"
        )
    if r["reviewer"] != actor:
        raise E.ReviewRefused(f"item {item} of review campaign {c.name!r} is assigned to {r['reviewer']}, not {actor}")
    if decision == "keep" and r["privileged"] and not (reason or "").strip():
        raise E.ReviewRefused(f"item {item} is privileged ({r['role']} in {r['tenant']}): keeping it needs a reason")
    if item in c.decisions:
        raise E.ReviewRefused(
            f"item {item} of review campaign {c.name!r} is already decided ({c.decisions[item]['decision']})"
        )
    for other in shared_membership(c, items, r):
        if other in c.decisions and c.decisions[other]["decision"] != decision:
            raise E.ReviewRefused(
                f"item {item} and item {other} (decided {c.decisions[other]['decision']}) both come "
                f"from {r['principal']}'s membership of team {r['via']}: a revoke removes the "
                "membership and both with it; decide them the same"
            )
    event = {
        "type": "ReviewDecided",
        "at": None,
        "actor": actor,
        "campaign": c.name,
        "item": item,
        "decision": decision,
        "reviewer": actor,
    }
    if reason:
        event["reason"] = reason
    return event


def reassign_event(
    c: Campaign, items: list[dict[str, Any]], numbers: list[int], reviewer: str, actor: str, reason: str | None
) -> dict[str, Any]:
    """The ReviewReassigned event for the owner `actor` giving `numbers` to `reviewer`, or the rule that refuses
    it (that `reviewer` is a live user or service account is the write model's rule)."""
    if actor != c.start["actor"]:
        raise E.ReviewRefused(
            f"only the owner of review campaign {c.name!r} ({c.start['actor']}) reassigns its items, not {actor}"
        )
    if c.close is not None:
        raise E.ReviewRefused(f"review campaign {c.name!r} is closed: no reassignment after close")
    seen: set[int] = set()
    for n in numbers:
        if not 1 <= n <= len(items):
            raise E.ReviewRefused(f"item {n} is not an item of review campaign {c.name!r} (it has {len(items)})")
        if n in seen:
            raise E.ReviewRefused(f"item {n} is given twice")
        seen.add(n)
        if n in c.decisions:
            raise E.ReviewRefused(
                f"item {n} of review campaign {c.name!r} is already decided ({c.decisions[n]['decision']})"
            )
        r = items[n - 1]
        why = conflict(r, reviewer)
        if why:
            raise E.ReviewRefused(f"{reviewer} may not review item {n} of review campaign {c.name!r}: {why}")
        if r["reviewer"] == reviewer:
            raise E.ReviewRefused(f"item {n} of review campaign {c.name!r} is already assigned to {reviewer}")
    event = {
        "type": "ReviewReassigned",
        "at": None,
        "actor": actor,
        "campaign": c.name,
        "items": numbers,
        "reviewer": reviewer,
    }
    if reason:
        event["reason"] = reason
    return event


def close_refusal(c: Campaign, state: PermissionState, actor: str, instant: str) -> str | None:
    """Why `actor` may not close the campaign at `instant`, or None: its owner may, and so may whoever holds
    `member:update` in the organization then (and `system`, the platform's own automation)."""
    if actor in (c.start["actor"], "system") or state.allows(actor, "update", "member/any", None, instant):
        return None
    return (
        f"only the owner of review campaign {c.name!r} ({c.start['actor']}) or a holder of member:update in "
        f"the organization closes it, not {actor}"
    )


def outcome(c: Campaign, item: int, undecided: str) -> str:
    """keep, revoke or exception: what the item comes to at close."""
    if item in c.decisions:
        return c.decisions[item]["decision"]
    return undecided


def removals(
    c: Campaign, items: list[dict[str, Any]], undecided: str, current: PermissionState, actor: str
) -> list[dict[str, Any]]:
    """The removal events that carry out the campaign's revocations (those not already carried out)."""
    direct: list[dict[str, Any]] = []
    by_membership: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_number = {r["item"]: r for r in items}
    for r in items:
        if outcome(c, r["item"], undecided) != "revoke" or carried_out(r, current):
            continue
        if r["via"]:
            kept = [
                n
                for n in shared_membership(c, items, r)
                if n in by_number and outcome(c, n, undecided) != "revoke" and not carried_out(by_number[n], current)
            ]
            if kept:
                raise E.ReviewRefused(
                    f"item {r['item']} is revoked and item {kept[0]} "
                    f"{'kept' if outcome(c, kept[0], undecided) == 'keep' else 'left as an exception'}, but both come "
                    f"from {r['principal']}'s membership of team {r['via']}: removing it would take item {kept[0]} "
                    "too; decide them the same (or close with --revoke-undecided / --no-auto-revoke)"
                )
            by_membership.setdefault((r["via"], r["principal"]), []).append(r)
        else:
            direct.append(
                {
                    "type": "RoleUnassigned",
                    "at": None,
                    "actor": actor,
                    "role": r["role"],
                    "principal": r["principal"],
                    "tenant": r["tenant"],
                    "resource": r["resource"],
                    "reason": f"access review {c.name} item {r['item']}: revoke",
                }
            )
    for (team, member), rs in sorted(by_membership.items()):
        numbers = ", ".join(str(r["item"]) for r in rs)
        roles = ", ".join(f"{r['role']} in {r['tenant']}" for r in rs)
        direct.append(
            {
                "type": "TeamMemberRemoved",
                "at": None,
                "actor": actor,
                "team": team,
                "member": member,
                "reason": f"access review {c.name} item{'s' if len(rs) > 1 else ''} {numbers}: revoke "
                f"(team membership removed: {roles} via team {team})",
            }
        )
    return [{k: v for k, v in ev.items() if v is not None} for ev in direct]


#: The events that give an item's access (back) or take it away, by the part of the access they touch.
ACCESS_EVENTS = frozenset(
    {"RoleAssigned", "RoleUnassigned", "TeamMemberAdded", "TeamMemberRemoved", "TeamDeleted", "TenantDeleted"}
)


def access_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    """The key of an ACCESS_EVENTS event, as `carrying_removal` looks it up."""
    t = ev["type"]
    if t in ("TeamMemberAdded", "TeamMemberRemoved"):
        return (t, ev["team"], ev["member"])
    if t == "TeamDeleted":
        return (t, ev["team"])
    if t == "TenantDeleted":
        return (t, ev["tenant"])
    return (t, ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))


def carrying_removal(
    r: dict[str, Any], start: int, revoked: int, events: Callable[[tuple[Any, ...]], list[tuple[int, Any]]]
) -> tuple[int, Any] | None:
    """The removal that carries out a revoke of item `r` recorded at position `revoked` (its decision, or the
    close), or None: when the access was gone there (removed after the population's position `start` and not
    given back), the removal that took it; else the first removal after `revoked`. A removal before the revoke
    of access given back before it carried nothing out. `events(key)` lists (position, payload) of the
    ACCESS_EVENTS with that key (access_key), in position order."""
    holder = f"team:{r['via']}" if r["via"] else r["principal"]
    grant = (r["role"], holder, r["tenant"], r["resource"])
    parts: list[tuple[tuple[Any, ...], str, bool]] = [
        (("RoleAssigned", *grant), "grant", True),
        (("RoleUnassigned", *grant), "grant", False),
        (("TenantDeleted", r["tenant"]), "tenant", False),
    ]
    if r["via"]:
        parts += [
            (("TeamMemberAdded", r["via"], r["principal"]), "member", True),
            (("TeamMemberRemoved", r["via"], r["principal"]), "member", False),
            (("TeamDeleted", r["via"]), "team", False),
        ]
    ordered = sorted(
        ((pos, payload, part, on) for key, part, on in parts for pos, payload in events(key) if pos > start),
        key=lambda e: e[0],
    )
    state = {part: True for _, part, _ in parts}  # held at `start`: the population is what was in force there
    last_off: tuple[int, Any] | None = None
    for pos, payload, part, on in ordered:
        held = all(state.values())
        if pos > revoked and not held:
            return last_off  # gone at the revoke and not given back before it
        state[part] = on
        if held and not all(state.values()):
            if pos > revoked:
                return pos, payload
            last_off = pos, payload
    return None if all(state.values()) else last_off


def carried_out(r: dict[str, Any], current: PermissionState) -> bool:
    """True when the item's access is gone from `current` (its assignment, or the team membership)."""
    if r["via"]:
        key = (r["role"], f"team:{r['via']}", r["tenant"], r["resource"])
        return r["principal"] not in current.members.get(r["via"], {}) or key not in current.assignments
    return (r["role"], r["principal"], r["tenant"], r["resource"]) not in current.assignments


def item_rows(c: Campaign, items: list[dict[str, Any]], current: PermissionState) -> list[dict[str, Any]]:
    """The items as rows for `review items`: population facts, reviewer, decision and remediation."""
    undecided = c.close["undecided"] if c.close else "exception"
    rows = []
    for r in items:
        d = c.decisions.get(r["item"])
        state = outcome(c, r["item"], undecided) if c.close else (d["decision"] if d else "open")
        removed = carried_out(r, current) if state == "revoke" else None
        rows.append(
            {
                "item": r["item"],
                "principal": r["principal"],
                "role": r["role"],
                "tenant": r["tenant"],
                "resource": r["resource"],
                "via": r["via"],
                "expires_at": r["expires_at"],
                "privileged": r["privileged"],
                "principal_kind": r["principal_kind"],
                "deactivated": r["deactivated"],
                **{k: r.get(k) for k in CONTEXT},
                "reviewer": r["reviewer"],
                "decision": d["decision"] if d else None,
                "decided_at": d["at"] if d else None,
                "reason": d.get("reason") if d else None,
                "outcome": state,
                "removed": removed,
            }
        )
    return rows
