"""The questions: check, who-can, what-can, explain, diff. Plain data out; formatting is the CLI's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.errors import LedgerError, ValidationError
from ledger.vocabulary import permission_matches, split_principal, split_resource, vocabulary
from projections.permissions import Assignment, PermissionState, Source


class QueryError(LedgerError):
    """A question the ledger cannot answer as asked (unknown principal type, bad resource, ...)."""


@dataclass(frozen=True)
class Question:
    principal: str
    action: str
    resource: str
    tenant: str | None


def validate(
    state: PermissionState, principal: str | None, action: str | None, resource: str | None, tenant: str | None
) -> None:
    """Refuse malformed questions with one clear message (unknown names are answered, not refused)."""
    if state.preset is None:
        raise QueryError("the ledger has no organization at that point")
    vocab = vocabulary(state.preset)
    if principal is not None:
        split_principal(principal)
    if action is not None:
        vocab.check_action(action)
    if resource is not None:
        rtype, _ = vocab.parse_resource(resource)
        if state.preset == "zenml-pro":
            if tenant is None and rtype in vocab.tenant_types:
                raise ValidationError(f"tenant: required for the tenant resource type {rtype!r} (give --tenant)")
            if tenant is not None and rtype in vocab.org_types:
                raise ValidationError(f"resource: {rtype!r} is an organization type: give no --tenant")


def _path(
    state: PermissionState,
    principal: str,
    a: Assignment,
    via: str | None,
    chain: list[str],
    perm: str,
    perm_src: Source,
) -> dict[str, Any]:
    """One path principal -> team -> role -> base roles -> permission, each link with its event."""
    links: list[dict[str, Any]] = []
    if via is not None:
        links.append({"link": f"{principal} is a member of team:{via}", **state.members[via][principal].as_dict()})
    holder = f"team:{via}" if via else principal
    where = f" in tenant {a.tenant}" if a.tenant else " in the organization"
    scope = f" on {a.resource}" if a.resource else ""
    until = f" until {a.expires_at}" if a.expires_at else ""
    links.append({"link": f"{holder} holds role {a.role}{where}{scope}{until}", **a.source.as_dict()})
    for child, base in zip(chain, chain[1:]):
        links.append({"link": f"role {child} is built on role {base}", **state.roles[child].source.as_dict()})
    links.append({"link": f"role {chain[-1]} allows {perm}", **perm_src.as_dict()})
    return {
        "role": a.role,
        "via_team": via,
        "tenant": a.tenant,
        "resource": a.resource,
        "expires_at": a.expires_at,
        "permission": perm,
        "granted_by_role": chain[-1],
        "links": links,
    }


def check(state: PermissionState, q: Question, instant: str) -> dict[str, Any]:
    """Is q allowed at `instant` in this state? With the paths that allow it, or why not."""
    validate(state, q.principal, q.action, q.resource, q.tenant)
    rtype = split_resource(q.resource)[0]
    paths = [
        _path(state, q.principal, a, via, chain, perm, src)
        for perm, scope, a, via, chain, src in state.grants(q.principal, instant, q.tenant)
        if (scope is None or scope == q.resource) and permission_matches(perm, rtype, q.action)
    ]
    return {
        "principal": q.principal,
        "action": q.action,
        "resource": q.resource,
        "tenant": q.tenant,
        "at": instant,
        "position": state.position,
        "allowed": bool(paths),
        "paths": paths,
        "why_not": None if paths else why_not(state, q, instant),
    }


def allowed(state: PermissionState, q: Question, instant: str) -> bool:
    """`check(state, q, instant)["allowed"]`, without building the paths (a batch asks only this)."""
    validate(state, q.principal, q.action, q.resource, q.tenant)
    return state.allows(q.principal, q.action, q.resource, q.tenant, instant)


def why_not(state: PermissionState, q: Question, instant: str) -> str:
    """The first reason, in the order of DESIGN section 3, that nothing grants q."""
    kind, _ = split_principal(q.principal)
    if kind != "team" and q.principal not in state.principals:
        return f"{q.principal} does not exist"
    if kind == "team" and q.principal.split(":", 1)[1] not in state.teams:
        return f"{q.principal} does not exist"
    if not state.is_active(q.principal):
        return f"{q.principal} is deactivated" if kind != "team" else f"{q.principal} was deleted"
    if q.tenant is not None and q.tenant not in state.tenants:
        return f"tenant {q.tenant} does not exist"
    if q.tenant is not None and not state.tenants[q.tenant]:
        return f"tenant {q.tenant} was deleted"
    expired = [a for a, _ in _paths_ignoring_expiry(state, q.principal, q.tenant) if not a.in_force(instant)]
    if expired:
        a = expired[0]
        return f"role {a.role} expired at {a.expires_at}; no other assignment allows it"
    return "no assignment of this principal (directly or through a team) allows it"


def _paths_ignoring_expiry(state: PermissionState, principal: str, tenant: str | None):
    holders = [(principal, None)] + [
        (f"team:{t}", t) for t in sorted(state.teams_of.get(principal, ())) if state.teams.get(t, False)
    ]
    for holder, via in holders:
        for key in state.held_by.get(holder, ()):
            a = state.assignments[key]
            if a.tenant == tenant and a.role in state.roles:
                yield a, via


def who_can(
    state: PermissionState, action: str, resource: str, tenant: str | None, instant: str
) -> list[dict[str, Any]]:
    """Users and service accounts (teams expanded) allowed `action` on `resource`: one row per path
    (principal, role, team it comes through, resource scope), with the first permission of the role's
    chain that allows it and the grant behind the path."""
    validate(state, None, action, resource, tenant)
    rtype = split_resource(resource)[0]
    # Candidates: direct holders and members of holding teams; then each is checked exactly.
    candidates: set[str] = set()
    for a in state.assignments.values():
        if a.tenant != tenant:
            continue
        if a.principal.startswith("team:"):
            candidates.update(state.members.get(a.principal.split(":", 1)[1], {}))
        else:
            candidates.add(a.principal)
    rows = []
    for principal in sorted(candidates):
        # Every path, not only the first: a path hidden behind another (a direct admin beside a team
        # role) is still access once the other is revoked. Several permissions of one role's chain may
        # allow the action through the same path: that is one path.
        seen: set[tuple[str, str | None, str | None]] = set()
        for perm, scope, a, via, _chain, _src in state.grants(principal, instant, tenant):
            if (a.role, via, scope) in seen:
                continue
            if (scope is None or scope == resource) and permission_matches(perm, rtype, action):
                seen.add((a.role, via, scope))
                rows.append(
                    {
                        "principal": principal,
                        "role": a.role,
                        "via_team": via,
                        "permission": perm,
                        "resource_scope": scope,
                        "expires_at": a.expires_at,
                        "granted_at": a.source.at,
                        "granted_by": a.source.actor,
                        "position": a.source.position,
                        "reason": a.source.reason,
                    }
                )
    return rows


def what_can(
    state: PermissionState, principal: str, tenant: str | None, instant: str, all_tenants: bool = False
) -> list[dict[str, Any]]:
    """Every permission `principal` holds at `instant`: per tenant (all live ones unless given) and org."""
    validate(state, principal, None, None, None)
    tenants: list[str | None]
    if tenant is not None:
        tenants = [tenant]
    else:
        tenants = [None, *sorted(t for t, live in state.tenants.items() if live)]
    rows = []
    for t in tenants:
        for perm, scope, a, via, chain, _src in state.grants(principal, instant, t):
            rows.append(
                {
                    "principal": principal,
                    "tenant": t,
                    "permission": perm,
                    "resource_scope": scope,
                    "role": a.role,
                    "via_team": via,
                    "from_role": chain[-1],
                    "expires_at": a.expires_at,
                    "granted_at": a.source.at,
                    "granted_by": a.source.actor,
                    "position": a.source.position,
                    "reason": a.source.reason,
                }
            )
    return rows


def effective_set(state: PermissionState, instant: str) -> dict[str, set[tuple[str | None, str | None, str]]]:
    """principal -> {(tenant, resource scope, permission)} for every user and service account."""
    out: dict[str, set[tuple[str | None, str | None, str]]] = {}
    tenants = [None, *sorted(t for t, live in state.tenants.items() if live)]
    for principal in state.subjects():
        held = {(t, scope, perm) for t in tenants for perm, scope, *_ in state.grants(principal, instant, t)}
        if held:
            out[principal] = held
    return out


def diff(
    before: PermissionState, after: PermissionState, t1: str, t2: str, events: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Permissions gained and lost per principal between t1 and t2, with the events that caused them."""
    a, b = effective_set(before, t1), effective_set(after, t2)
    rows = []
    for principal in sorted(set(a) | set(b)):
        gained = b.get(principal, set()) - a.get(principal, set())
        lost = a.get(principal, set()) - b.get(principal, set())
        for change, items in (("gained", gained), ("lost", lost)):
            for tenant, scope, perm in sorted(items, key=lambda x: (x[0] or "", x[1] or "", x[2])):
                causes = _causes(before, after, principal, tenant, scope, perm, change, events, t1, t2)
                rows.append(
                    {
                        "principal": principal,
                        "change": change,
                        "tenant": tenant,
                        "permission": perm,
                        "resource_scope": scope,
                        "causes": causes,
                    }
                )
    return rows


def _causes(
    before: PermissionState,
    after: PermissionState,
    principal: str,
    tenant: str | None,
    scope: str | None,
    perm: str,
    change: str,
    events: list[tuple[int, dict[str, Any]]],
    t1: str,
    t2: str,
) -> list[dict[str, Any]]:
    """The events between the two times that touch the paths of this permission (or an expiry)."""
    state, instant = (after, t2) if change == "gained" else (before, t1)
    roles: set[str] = set()
    teams: set[str] = set()
    keys: set[tuple[str, str, str | None, str | None]] = set()
    expiries: list[dict[str, Any]] = []
    for p, s, a, via, chain, _ in state.grants(principal, instant, tenant):
        if p == perm and s == scope:
            roles.update(chain)
            if via:
                teams.add(via)
            keys.add((a.role, a.principal, a.tenant, a.resource))
            if change == "lost" and a.expires_at and t1 < a.expires_at <= t2:
                expiries.append(
                    {
                        "position": None,
                        "at": a.expires_at,
                        "event": "Expired",
                        "actor": "system",
                        "reason": f"assignment of {a.role} to {a.principal} expired (no event)",
                    }
                )
    out = []
    for position, ev in events:
        kind = ev["type"]
        hit = (
            (
                kind in ("RoleAssigned", "RoleUnassigned")
                and (ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource")) in keys
            )
            or (kind in ("TeamMemberAdded", "TeamMemberRemoved") and ev["team"] in teams and ev["member"] == principal)
            or (kind in ("RolePermissionsChanged", "RoleCreated", "RoleDeleted") and ev["role"] in roles)
            or (kind in ("UserDeactivated", "UserReactivated") and f"user:{ev['user']}" == principal)
            or (
                kind in ("ServiceAccountDeactivated", "ServiceAccountReactivated")
                and f"service_account:{ev['service_account']}" == principal
            )
            or (kind in ("TeamDeleted",) and ev["team"] in teams)
            or (kind == "TenantDeleted" and ev["tenant"] == tenant)
        )
        if hit:
            out.append(
                {"position": position, "at": ev["at"], "event": kind, "actor": ev["actor"], "reason": ev.get("reason")}
            )
    return out + expiries
