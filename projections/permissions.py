"""PermissionState: the fold of the event log into who holds what, with the provenance of every link.

The fold keeps facts (roles, assignments, memberships, statuses) and never evaluates time:
expiry is decided by the instant a question is asked about (DESIGN section 3), so one state
answers for every instant between its position and the next event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from itertools import product, repeat
from operator import itemgetter
from typing import Any, NamedTuple

from ledger.vocabulary import permission_matches, predefined_roles


class Source(NamedTuple):
    """The event behind a fact: where it is in the log, when, by whom, why."""

    position: int
    at: str
    actor: str
    reason: str | None
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "at": self.at,
            "actor": self.actor,
            "reason": self.reason,
            "event": self.type,
        }


PREDEFINED = Source(0, "", "system", "predefined role of the preset", "Preset")


@dataclass(slots=True)
class Role:
    name: str
    scope: str
    base: str | None
    permissions: dict[str, Source]  # own permission -> the event that granted it to the role
    source: Source
    predefined: bool = False


@dataclass(slots=True)
class Assignment:
    role: str
    principal: str
    tenant: str | None
    resource: str | None
    expires_at: str | None
    source: Source

    def in_force(self, instant: str) -> bool:
        return self.expires_at is None or instant < self.expires_at


AssignmentKey = tuple[str, str, str | None, str | None]


@dataclass
class PermissionState:
    """Who exists, who holds which role where, and what each role allows, as of `position`."""

    position: int = 0
    at: str = ""
    preset: str | None = None
    tenants: dict[str, bool] = field(default_factory=dict)  # name -> live (False once deleted)
    principals: dict[str, bool] = field(default_factory=dict)  # user:/service_account: ref -> active
    teams: dict[str, bool] = field(default_factory=dict)  # name -> live
    members: dict[str, dict[str, Source]] = field(default_factory=dict)  # team -> member ref -> source
    teams_of: dict[str, set[str]] = field(default_factory=dict)  # member ref -> teams
    roles: dict[str, Role] = field(default_factory=dict)
    assignments: dict[AssignmentKey, Assignment] = field(default_factory=dict)
    held_by: dict[str, set[AssignmentKey]] = field(default_factory=dict)  # principal ref -> keys
    created: dict[str, Source] = field(default_factory=dict)  # principal/team/tenant ref -> creation
    status_source: dict[str, Source] = field(default_factory=dict)  # ref -> last status change

    # -- folding ---------------------------------------------------------------------------

    def apply(self, position: int, ev: dict[str, Any]) -> None:
        """Fold one event (already validated by the ledger) into the state."""
        src = Source(position, ev["at"], ev["actor"], ev.get("reason"), ev["type"])
        handler = _HANDLERS.get(ev["type"])
        if handler is not None:
            handler(self, ev, src)
        self.position = position
        self.at = ev["at"]

    def fold(self, events: Iterator[tuple[int, dict[str, Any]]]) -> PermissionState:
        for position, ev in events:
            self.apply(position, ev)
        return self

    # -- questions -------------------------------------------------------------------------

    def effective_permissions(self, role: str) -> list[tuple[str, list[str], Source]]:
        """(permission, chain of roles from `role` to the one that owns it, source), live through bases."""
        out: list[tuple[str, list[str], Source]] = []
        chain: list[str] = []
        current: str | None = role
        while current is not None and current in self.roles and current not in chain:
            chain.append(current)
            r = self.roles[current]
            for perm, src in r.permissions.items():
                out.append((perm, list(chain), src))
            current = r.base
        return out

    def is_active(self, principal: str) -> bool:
        kind = principal.split(":", 1)[0]
        if kind == "team":
            return self.teams.get(principal.split(":", 1)[1], False)
        return self.principals.get(principal, False)

    def paths(self, principal: str, instant: str, tenant: str | None) -> Iterator[tuple[Assignment, str | None]]:
        """Assignments in force at `instant` that give `principal` something in `tenant` (None: the
        organization), each with the team it comes through (None: held directly)."""
        if not self.is_active(principal):
            return
        if tenant is not None and not self.tenants.get(tenant, False):
            return
        holders: list[tuple[str, str | None]] = [(principal, None)]
        if not principal.startswith("team:"):
            for team in sorted(self.teams_of.get(principal, ())):
                if self.teams.get(team, False):
                    holders.append((f"team:{team}", team))
        for holder, via in holders:
            for key in sorted(self.held_by.get(holder, ()), key=_key_order):
                a = self.assignments[key]
                role = self.roles.get(a.role)
                if role is None or a.tenant != tenant or not a.in_force(instant):
                    continue
                yield a, via

    def grants(
        self, principal: str, instant: str, tenant: str | None
    ) -> Iterator[tuple[str, str | None, Assignment, str | None, list[str], Source]]:
        """Every (permission, resource scope, assignment, team, role chain, permission source) in force."""
        for a, via in self.paths(principal, instant, tenant):
            scope_type = a.resource.split("/", 1)[0] if a.resource else None
            for perm, chain, src in self.effective_permissions(a.role):
                if scope_type is not None:
                    ptype = perm.split(":", 1)[0]
                    if ptype not in ("*", scope_type):
                        continue
                yield perm, a.resource, a, via, chain, src

    def allows(self, principal: str, action: str, resource: str, tenant: str | None, instant: str) -> bool:
        rtype = resource.split("/", 1)[0]
        for perm, scope, *_ in self.grants(principal, instant, tenant):
            if (scope is None or scope == resource) and permission_matches(perm, rtype, action):
                return True
        return False

    def subset_for(self, principal: str, extra_teams: set[str] = frozenset()) -> PermissionState:
        """A small independent copy holding everything that decides questions about `principal`.

        Roles, tenants and team statuses are kept whole (they are few); memberships and
        assignments only for the principal and its teams (and `extra_teams`, which it may join
        in the events still to be folded). Folding later events into the subset and asking about
        `principal` gives the same answers as the full state.
        """
        teams = set(self.teams_of.get(principal, ())) | set(extra_teams)
        holders = {principal} | {f"team:{t}" for t in teams}
        sub = PermissionState(position=self.position, at=self.at, preset=self.preset)
        sub.tenants = dict(self.tenants)
        sub.teams = dict(self.teams)
        sub.principals = {principal: self.principals[principal]} if principal in self.principals else {}
        sub.members = {t: dict(self.members.get(t, {})) for t in teams}
        sub.teams_of = {principal: set(self.teams_of.get(principal, ()))}
        sub.roles = {
            name: Role(r.name, r.scope, r.base, dict(r.permissions), r.source, r.predefined)
            for name, r in self.roles.items()
        }
        sub.held_by = {h: set(self.held_by.get(h, ())) for h in holders}
        sub.assignments = {k: self.assignments[k] for h in holders for k in sub.held_by[h]}
        sub.created = {k: v for k, v in self.created.items() if k in holders}
        sub.status_source = {k: v for k, v in self.status_source.items() if k in holders}
        return sub

    def subjects(self) -> list[str]:
        """Users and service accounts (active or not), sorted."""
        return sorted(self.principals)


# -- plain data (snapshots) ---------------------------------------------------------------------


class BadSnapshot(ValueError):
    """Stored data that is not a permission state: whoever reads it rebuilds the state instead."""


_DATA_FIELDS = frozenset(f.name for f in fields(PermissionState)) - {"teams_of", "held_by"} | {
    "sources",
    "member_refs",
    "holders",
}


def state_to_data(s: PermissionState) -> dict[str, Any]:
    """The state as plain dicts, lists, strings, integers, booleans and None (see state_from_data).

    Each distinct source is written once and referred to by its index; the sets keyed by member
    and by holder are written as their keys only, being the inverses of `members` and
    `assignments`, so a snapshot cannot make them disagree.
    """
    ids: dict[Source, int] = {}

    def ref(src: Source) -> int:
        i = ids.get(src)
        if i is None:
            i = ids[src] = len(ids)
        return i

    data = {
        "position": s.position,
        "at": s.at,
        "preset": s.preset,
        "tenants": s.tenants,
        "principals": s.principals,
        "teams": s.teams,
        "members": {t: {m: ref(src) for m, src in ms.items()} for t, ms in s.members.items()},
        "member_refs": list(s.teams_of),
        "roles": [
            [r.name, r.scope, r.base, {p: ref(src) for p, src in r.permissions.items()}, ref(r.source), r.predefined]
            for r in s.roles.values()
        ],
        "assignments": [
            [a.role, a.principal, a.tenant, a.resource, a.expires_at, ref(a.source)] for a in s.assignments.values()
        ],
        "holders": list(s.held_by),
        "created": {k: ref(src) for k, src in s.created.items()},
        "status_source": {k: ref(src) for k, src in s.status_source.items()},
    }
    data["sources"] = [tuple(src) for src in ids]
    return data


def state_from_data(d: Any) -> PermissionState:
    """The state written by state_to_data, every field's type and shape checked (BadSnapshot if not).

    The data may come from anyone who can write the database: nothing in it is trusted to have
    the shape the fold gives, so nothing read from it can fail later in an unexpected way. (The
    rows are checked by their tuple of types: a snapshot holds some 100k of them on a large ledger.)
    """
    _ensure(type(d) is dict and d.keys() == _DATA_FIELDS, "not a permission state")
    items = _rows(d["sources"], _SOURCE, "a source that is not [position, at, actor, reason, event]")
    _ensure(min(map(itemgetter(0), items), default=0) >= 0, "a source's position is negative")
    sources = list(map(Source._make, items))
    s = PermissionState(position=d["position"], at=d["at"], preset=d["preset"])
    _ensure(
        type(s.position) is int and s.position >= 0 and type(s.at) is str and type(s.preset) in _OPT_STR,
        "position, at or preset of the wrong type",
    )
    s.tenants = _flags(d["tenants"], "tenants")
    s.principals = _flags(d["principals"], "principals")
    s.teams = _flags(d["teams"], "teams")
    s.members = {t: _refs(ms, sources, "members") for t, ms in _dict(d["members"], "members").items()}
    s.teams_of = {m: set() for m in _names(d["member_refs"], "member_refs")}
    for team, ms in s.members.items():
        for member in ms:
            _ensure(member in s.teams_of, "a member missing from member_refs")
            s.teams_of[member].add(team)
    roles = _rows(d["roles"], _ROLE, "a role that is not [name, scope, base, permissions, source, predefined]")
    for name, scope, base, perms, source, predefined in roles:
        _ensure(name not in s.roles and 0 <= source < len(sources), "a role twice or of no source")
        s.roles[name] = Role(name, scope, base, _refs(perms, sources, "permissions"), sources[source], predefined)
    s.held_by = {h: set() for h in _names(d["holders"], "holders")}
    assignments, held_by, count = s.assignments, s.held_by, len(sources)
    for role, principal, tenant, resource, expires_at, source in _rows(
        d["assignments"],
        _ASSIGNMENT,
        "an assignment that is not [role, principal, tenant, resource, expires_at, source]",
    ):
        key = (role, principal, tenant, resource)
        if key in assignments or principal not in held_by or not 0 <= source < count:
            raise BadSnapshot("an assignment twice, of no holder or of no source")
        assignments[key] = Assignment(role, principal, tenant, resource, expires_at, sources[source])
        held_by[principal].add(key)
    s.created = _refs(d["created"], sources, "created")
    s.status_source = _refs(d["status_source"], sources, "status_source")
    return s


_OPT_STR = (str, type(None))
_SOURCE = frozenset(product([int], [str], [str], _OPT_STR, [str]))
_ROLE = frozenset(product([str], [str], _OPT_STR, [dict], [int], [bool]))
_ASSIGNMENT = frozenset(product([str], [str], _OPT_STR, _OPT_STR, _OPT_STR, [int]))


def _ensure(condition: bool, problem: str) -> None:
    if not condition:
        raise BadSnapshot(problem)


def _rows(value: Any, types: frozenset[tuple[type, ...]], problem: str) -> list[list[Any]]:
    """A list of lists whose items have one of the tuples of types given (looped over in C: the
    snapshot of a large ledger holds some 100k rows)."""
    _ensure(
        type(value) is list and _types(value) <= {list} and types.issuperset(map(tuple, map(map, repeat(type), value))),
        problem,
    )
    return value


def _types(values: Iterable[Any]) -> set[type]:
    return set(map(type, values))


def _dict(value: Any, what: str) -> dict[str, Any]:
    _ensure(type(value) is dict, f"{what} is not an object")  # JSON objects have string keys only
    return value


def _refs(value: Any, sources: list[Source], what: str) -> dict[str, Source]:
    """An object whose values index the table of sources, with the sources in their place."""
    indexes = _dict(value, what).values()
    _ensure(
        _types(indexes) <= {int} and min(indexes, default=0) >= 0 and max(indexes, default=0) < len(sources),
        f"{what} refers to a source that is not in the table",
    )
    return {k: sources[i] for k, i in value.items()}


def _flags(value: Any, what: str) -> dict[str, bool]:
    _ensure(_types(_dict(value, what).values()) <= {bool}, f"{what} holds a value that is not a boolean")
    return value


def _names(value: Any, what: str) -> list[str]:
    _ensure(
        type(value) is list and _types(value) <= {str} and len(set(value)) == len(value),
        f"{what} is not a list of distinct strings",
    )
    return value


def _key_order(key: AssignmentKey) -> tuple[str, str, str, str]:
    return (key[0], key[1], key[2] or "", key[3] or "")


# -- handlers, one per event type -------------------------------------------------------------


def _org(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.preset = ev["preset"]
    for r in predefined_roles(ev["preset"]).values():
        s.roles[r.name] = Role(r.name, r.scope, None, {p: PREDEFINED for p in r.permissions}, PREDEFINED, True)


def _tenant_created(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.tenants[ev["tenant"]] = True
    s.created[f"tenant:{ev['tenant']}"] = src


def _tenant_deleted(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.tenants[ev["tenant"]] = False
    s.status_source[f"tenant:{ev['tenant']}"] = src


def _principal_created(kind: str, field_name: str):
    def handler(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
        ref = f"{kind}:{ev[field_name]}"
        s.principals[ref] = True
        s.created[ref] = src

    return handler


def _principal_status(kind: str, field_name: str, active: bool):
    def handler(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
        ref = f"{kind}:{ev[field_name]}"
        s.principals[ref] = active
        s.status_source[ref] = src

    return handler


def _team_created(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.teams[ev["team"]] = True
    s.members.setdefault(ev["team"], {})
    s.created[f"team:{ev['team']}"] = src


def _team_deleted(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.teams[ev["team"]] = False
    s.status_source[f"team:{ev['team']}"] = src


def _member_added(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.members.setdefault(ev["team"], {})[ev["member"]] = src
    s.teams_of.setdefault(ev["member"], set()).add(ev["team"])


def _member_removed(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.members.get(ev["team"], {}).pop(ev["member"], None)
    s.teams_of.get(ev["member"], set()).discard(ev["team"])


def _role_created(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.roles[ev["role"]] = Role(ev["role"], ev["scope"], ev.get("base"), {p: src for p in ev["permissions"]}, src)


def _role_changed(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    role = s.roles[ev["role"]]
    for p in ev.get("remove", []):
        role.permissions.pop(p, None)
    for p in ev.get("add", []):
        role.permissions[p] = src


def _role_deleted(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    s.roles.pop(ev["role"], None)


def _key(ev: dict[str, Any]) -> AssignmentKey:
    return (ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))


def _assigned(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    key = _key(ev)
    s.assignments[key] = Assignment(
        ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"), ev.get("expires_at"), src
    )
    s.held_by.setdefault(ev["principal"], set()).add(key)


def _unassigned(s: PermissionState, ev: dict[str, Any], src: Source) -> None:
    key = _key(ev)
    s.assignments.pop(key, None)
    s.held_by.get(ev["principal"], set()).discard(key)


_HANDLERS = {
    "OrganizationCreated": _org,
    "TenantCreated": _tenant_created,
    "TenantDeleted": _tenant_deleted,
    "UserCreated": _principal_created("user", "user"),
    "UserDeactivated": _principal_status("user", "user", False),
    "UserReactivated": _principal_status("user", "user", True),
    "ServiceAccountCreated": _principal_created("service_account", "service_account"),
    "ServiceAccountDeactivated": _principal_status("service_account", "service_account", False),
    "ServiceAccountReactivated": _principal_status("service_account", "service_account", True),
    "TeamCreated": _team_created,
    "TeamDeleted": _team_deleted,
    "TeamMemberAdded": _member_added,
    "TeamMemberRemoved": _member_removed,
    "RoleCreated": _role_created,
    "RolePermissionsChanged": _role_changed,
    "RoleDeleted": _role_deleted,
    "RoleAssigned": _assigned,
    "RoleUnassigned": _unassigned,
}
