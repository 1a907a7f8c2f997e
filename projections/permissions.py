"""PermissionState: the fold of the event log into who holds what, with the provenance of every link.

The fold keeps facts (roles, assignments, memberships, statuses) and never evaluates time:
expiry is decided by the instant a question is asked about (DESIGN section 3), so one state
answers for every instant between its position and the next event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
        return {"position": self.position, "at": self.at, "actor": self.actor, "reason": self.reason,
                "event": self.type}


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

    def grants(self, principal: str, instant: str, tenant: str | None
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
        sub.roles = {name: Role(r.name, r.scope, r.base, dict(r.permissions), r.source, r.predefined)
                     for name, r in self.roles.items()}
        sub.held_by = {h: set(self.held_by.get(h, ())) for h in holders}
        sub.assignments = {k: self.assignments[k] for h in holders for k in sub.held_by[h]}
        sub.created = {k: v for k, v in self.created.items() if k in holders}
        sub.status_source = {k: v for k, v in self.status_source.items() if k in holders}
        return sub

    def subjects(self) -> list[str]:
        """Users and service accounts (active or not), sorted."""
        return sorted(self.principals)


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
    s.assignments[key] = Assignment(ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"),
                                    ev.get("expires_at"), src)
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
