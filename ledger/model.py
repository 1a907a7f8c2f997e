"""The write model: the rules of DESIGN section 3 that decide whether an event may be recorded.

It reads the indexed current state (side tables) through the write transaction's cursor,
caches what it has read, applies accepted events to the cache, and flushes changes back in
the same transaction. One instance lives for one write transaction: a single command or a
whole import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger import errors as E
from ledger.authority import Need, Rules, default_rules, instant_key, need
from ledger.events import FINDING_TYPES
from ledger.store import Cursor
from ledger.vocabulary import (
    Vocabulary,
    permission_matches,
    predefined_roles,
    split_principal,
    split_resource,
    vocabulary,
)

_MISSING = object()
CACHE_LIMIT = 500_000  # cached rows of the side tables; beyond it the cache is emptied (all is flushed)
USAGE_LIMIT = 100_000  # principals remembered as valid for usage events
_USAGE_KEY = frozenset({"ConnectorSecretAccessed", "ResourceAccessed"})


@dataclass(slots=True)
class Entity:
    kind: str
    name: str
    status: str  # active | deactivated | deleted
    ref: str | None = None  # a role's base; a connector's tenant
    data: dict[str, Any] = field(default_factory=dict)


class WriteModel:
    """Validates events against the ledger's current state and applies the accepted ones."""

    def __init__(
        self,
        cursor: Cursor,
        *,
        empty: bool = False,
        enforce_authority: bool = False,
        stored: Callable[[list[int]], list[tuple[int, bytes]]] | None = None,
    ):
        self.c = cursor
        # The stored events at some positions (those written before this write), to tell who caused a finding.
        self._stored = stored
        # Writing into an empty ledger, the caches hold all there is until they are first
        # trimmed: what they lack does not exist, and need not be looked up.
        self._complete = empty
        self._entities: dict[tuple[str, str], Entity | None] = {}
        self._dirty_entities: set[tuple[str, str]] = set()
        self._grants: dict[tuple[str, str, str, str], Any] = {}
        self._dirty_grants: set[tuple[str, str, str, str]] = set()
        self._members: dict[tuple[str, str], bool] = {}
        self._dirty_members: set[tuple[str, str]] = set()
        self._usage_principals: set[str] = set()
        self._usage_tenants: set[str | None] = set()
        self._usage_kinds: set[tuple[Any, ...]] = set()
        self._usage_connectors: set[tuple[Any, ...]] = set()
        self._batches_here: set[tuple[str, str]] = set()  # (campaign, batch) first recorded in this write
        # Called before a flush writes anything (a group commit takes its request's savepoint there).
        self.before_write: Callable[[], None] | None = None
        self._asked = enforce_authority
        self._rules: dict[str, Callable[[dict[str, Any]], str]] = {
            name[len("_on_") :]: getattr(self, name) for name in dir(self) if name.startswith("_on_")
        }
        self._judged_by()

    def _judged_by(self) -> None:
        """The vocabulary and the authority rules, from the organization as the tables and cache hold it."""
        org = self.entity("organization", "")
        self.vocab: Vocabulary | None = vocabulary(org.data["preset"]) if org else None
        # A ledger created with --enforce-authority judges every change by its actor's permissions.
        # A write may ask for it too (a change made through the service with a `change` token).
        by_ledger = bool(org and org.data.get("enforce_authority"))
        self.authority: Rules | None = default_rules(org.data["preset"]) if org and (by_ledger or self._asked) else None
        self._by_ledger = by_ledger

    def judge(self, enforce_authority: bool) -> None:
        """Hold the changes that follow to the authority rules (or not, unless the ledger enforces them)."""
        if enforce_authority != self._asked:
            self._asked = enforce_authority
            self._judged_by()

    def forget(self, batches_here: set[tuple[str, str]]) -> None:
        """Drop every cached row (the tables were rolled back to what was flushed): read afresh from here on."""
        self._entities.clear()
        self._grants.clear()
        self._members.clear()
        self._dirty_entities.clear()
        self._dirty_grants.clear()
        self._dirty_members.clear()
        self._usage_principals.clear()
        self._usage_tenants.clear()
        self._usage_kinds.clear()
        self._usage_connectors.clear()
        self._batches_here = set(batches_here)
        self._complete = False
        self._judged_by()

    @property
    def batches_here(self) -> set[tuple[str, str]]:
        return self._batches_here

    # -- reading and caching --------------------------------------------------------------

    def entity(self, kind: str, name: str) -> Entity | None:
        key = (kind, name)
        if key not in self._entities:
            if self._complete:
                return None
            self.c.execute("SELECT status, ref, data FROM al_entities WHERE kind = ? AND name = ?", key)
            row = self.c.fetchone()
            self._entities[key] = None if row is None else Entity(kind, name, row[0], row[1], json.loads(row[2]))
        return self._entities[key]

    def prefetch(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        """Read the principals and tenants that a chunk's usage events name, and the cache lacks, in one
        statement per kind (a batch of platform facts names hundreds: one round trip each, else)."""
        if self._complete:
            return
        wanted: dict[str, set[str]] = {}
        for _, ev in events:
            if ev.get("type") not in _USAGE_KEY:
                continue
            try:
                kind, name = split_principal(ev.get("principal"))
            except E.LedgerError:
                kind = ""  # refused when the event is applied, with its own message
            if kind in ("user", "service_account") and (kind, name) not in self._entities:
                wanted.setdefault(kind, set()).add(name)
            tenant = ev.get("tenant")
            if isinstance(tenant, str) and ("tenant", tenant) not in self._entities:
                wanted.setdefault("tenant", set()).add(tenant)
        for kind, names in wanted.items():
            ordered = sorted(names)
            for i in range(0, len(ordered), 500):
                part = ordered[i : i + 500]
                if self.c.postgres:
                    # One array parameter: no query text of 500 placeholders to build, send, split and plan.
                    self.c.execute(
                        "SELECT name, status, ref, data FROM al_entities WHERE kind = ? AND name = ANY(?)", (kind, part)
                    )
                else:
                    self.c.execute(
                        f"SELECT name, status, ref, data FROM al_entities WHERE kind = ? AND name IN "
                        f"({', '.join('?' for _ in part)})",
                        (kind, *part),
                    )
                found = {row[0]: row for row in self.c.fetchall()}
                for name in part:
                    row = found.get(name)
                    self._entities[(kind, name)] = (
                        None if row is None else Entity(kind, name, row[1], row[2], json.loads(row[3]))
                    )

    def _put(self, entity: Entity) -> None:
        key = (entity.kind, entity.name)
        self._entities[key] = entity
        self._dirty_entities.add(key)

    def grant(self, key: tuple[str, str, str, str]) -> Any:
        """The grant's expires_at ('' when it has none), or _MISSING when not held."""
        if key not in self._grants:
            if self._complete:
                return _MISSING
            self.c.execute(
                "SELECT expires_at FROM al_grants WHERE role = ? AND principal = ? AND tenant = ? AND resource = ?", key
            )
            row = self.c.fetchone()
            self._grants[key] = _MISSING if row is None else (row[0] or "")
        return self._grants[key]

    def member(self, team: str, member: str) -> bool:
        key = (team, member)
        if key not in self._members:
            if self._complete:
                return False
            self.c.execute("SELECT 1 FROM al_members WHERE team = ? AND member = ?", key)
            self._members[key] = self.c.fetchone() is not None
        return self._members[key]

    def flush(self) -> None:
        """Write the cached changes to the side tables (same transaction)."""
        if self.before_write is not None and (self._dirty_entities or self._dirty_grants or self._dirty_members):
            self.before_write()
        entities = []
        for key in self._dirty_entities:
            e = self._entities[key]
            assert e is not None
            entities.append((e.kind, e.name, e.status, e.ref, json.dumps(e.data)))
        self.c.executemany(
            "INSERT INTO al_entities (kind, name, status, ref, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET status = excluded.status, ref = excluded.ref, "
            "data = excluded.data",
            entities,
        )
        self._dirty_entities.clear()
        upserts, deletes = [], []
        for key in self._dirty_grants:
            value = self._grants[key]
            if value is _MISSING:
                deletes.append(key)
            else:
                upserts.append((*key, value or None))
        self.c.executemany(
            "DELETE FROM al_grants WHERE role = ? AND principal = ? AND tenant = ? AND resource = ?", deletes
        )
        self.c.executemany(
            "INSERT INTO al_grants (role, principal, tenant, resource, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (role, principal, tenant, resource) "
            "DO UPDATE SET expires_at = excluded.expires_at",
            upserts,
        )
        self._dirty_grants.clear()
        adds = [k for k in self._dirty_members if self._members[k]]
        removes = [k for k in self._dirty_members if not self._members[k]]
        self.c.executemany("DELETE FROM al_members WHERE team = ? AND member = ?", removes)
        self.c.executemany("INSERT INTO al_members (team, member) VALUES (?, ?) ON CONFLICT DO NOTHING", adds)
        self._dirty_members.clear()
        if len(self._entities) + len(self._grants) + len(self._members) > CACHE_LIMIT:
            # Bounded memory on huge imports: everything is in the tables now.
            self._entities.clear()
            self._grants.clear()
            self._members.clear()
            self._complete = False

    # -- the rules ------------------------------------------------------------------------

    def apply(self, ev: dict[str, Any]) -> str:
        """Check `ev` against the rules and apply it; return the key of the stream it belongs to."""
        kind = ev["type"]
        if kind != "OrganizationCreated" and self.vocab is None:
            raise E.NotInitialized(
                "the ledger has no organization yet: run `access-ledger init` first "
                "(or import a file that starts with OrganizationCreated)"
            )
        if kind in _USAGE_KEY:
            # Usage events change nothing, so each part of a verdict (this principal exists, this
            # tenant is live, this type takes this action there) holds until the next deletion;
            # an event whose parts were all seen valid needs no rule. (The resource's id was
            # checked when parsed; the rules look at its type.)
            principal, tenant = ev["principal"], ev.get("tenant")
            if kind == "ResourceAccessed":
                part: tuple[Any, ...] = (ev["resource"].partition("/")[0], ev["action"], tenant is None)
                known = self._usage_kinds
            else:
                part = (tenant, ev["connector"])
                known = self._usage_connectors
            if principal in self._usage_principals and tenant in self._usage_tenants and part in known:
                return ""
            result = self._rules[kind](ev)
            if len(self._usage_principals) >= USAGE_LIMIT:
                self._usage_principals.clear()  # bounded memory; it is only a shortcut
            self._usage_principals.add(principal)
            self._usage_tenants.add(tenant)
            known.add(part)
            return result
        if kind == "TenantDeleted":
            # Only a deletion can make an accepted usage event unacceptable (deactivated principals
            # may still be seen using things); creations only widen what is valid.
            self._usage_tenants.clear()
            self._usage_connectors.clear()
        elif kind == "ConnectorDeleted":
            self._usage_connectors.clear()
        if self.authority is not None:
            wanted = need(self.authority, ev)
            if wanted is not None:
                self._judge(ev["actor"], ev["at"], wanted)
        return self._rules[kind](ev)

    # -- authority of a change (DESIGN section 3), on a ledger that enforces it ------------------

    def _judge(self, actor: str, at: str, wanted: Need) -> None:
        """Refuse the change unless `actor` holds what it needs in the state just before it (check semantics)."""
        if self._by_ledger:
            suffix = "(this ledger enforces authority)"
        elif wanted.event in FINDING_TYPES:
            suffix = "(triage is held to the authority rules even where the ledger does not enforce them)"
        else:
            suffix = "(the service holds every change to the authority rules)"
        kind, name = split_principal(actor, "actor")
        who = self.entity(kind, name)
        if who is None:
            raise E.Unauthorised(f"actor: {actor} is not recorded in the ledger and may make no change {suffix}")
        if who.status != "active":
            word = "was deleted" if kind == "team" else "is deactivated"
            raise E.Unauthorised(f"actor: {actor} {word} and may make no change {suffix}")
        if not self._holds(actor, kind, instant_key(at), wanted):
            raise E.Unauthorised(f"actor: {actor} lacks {wanted.describe()} (needed for {wanted.event}; {suffix[1:]}")

    def _holds(self, actor: str, kind: str, instant: str, wanted: Need) -> bool:
        self.flush()  # the questions below are asked of the tables
        holders = [actor]
        if kind != "team":
            self.c.execute(
                "SELECT m.team FROM al_members m JOIN al_entities t ON t.kind = 'team' AND t.name = m.team "
                "AND t.status = 'active' WHERE m.member = ?",
                (actor,),
            )
            holders += [f"team:{team}" for (team,) in self.c.fetchall()]
        tenant_live = False
        if wanted.tenant is not None:
            t = self.entity("tenant", wanted.tenant)
            tenant_live = t is not None and t.status == "active"
        marks = ", ".join("?" for _ in holders)
        self.c.execute(
            f"SELECT role, tenant, resource, expires_at FROM al_grants WHERE principal IN ({marks})", tuple(holders)
        )
        rtype, action = wanted.permission.split(":", 1)
        for role, tenant, resource, expires in self.c.fetchall():
            if tenant == "":
                if not wanted.in_organization:
                    continue
            elif not (tenant_live and tenant == wanted.tenant):
                continue
            if expires and not instant < instant_key(expires):
                continue
            if resource and resource != wanted.resource:
                continue
            scoped = resource.split("/", 1)[0] if resource else None
            for perm in self._effective(role):
                if scoped is not None and perm.split(":", 1)[0] not in ("*", scoped):
                    continue
                if permission_matches(perm, rtype, action):
                    return True
        return False

    def _effective(self, role: str) -> list[str]:
        """A role's permissions and its bases', live."""
        out: list[str] = []
        seen: set[str] = set()
        current: str | None = role
        while current is not None and current not in seen:
            seen.add(current)
            r = self.entity("role", current)
            if r is None or r.status == "deleted":
                break
            out += r.data["permissions"]
            current = r.ref
        return out

    def _require(self, kind: str, name: str, label: str | None = None) -> Entity:
        e = self.entity(kind, name)
        label = label or kind.replace("_", " ")
        if e is None:
            raise E.UnknownEntity(f"unknown {label} {name!r}{self._did_you_mean(kind, name)}")
        return e

    def _did_you_mean(self, kind: str, name: str) -> str:
        """The closest recorded names of this kind, as the queries name them (the error path only)."""
        from ledger.names import closest

        pending = [key for key, e in self._entities.items() if e is not None and key[0] == kind]
        close = closest(self.c, (kind,), name, as_principal=False, pending=pending)
        return f" (did you mean {' or '.join(repr(n) for n in close)}?)" if close else ""

    def _tenant(self, name: str) -> Entity:
        e = self._require("tenant", name)
        if e.status == "deleted":
            raise E.DeletedTenant(f"tenant {name!r} was deleted: nothing may target it")
        return e

    def _principal(self, ref: str, *, allow_team: bool = True) -> Entity:
        kind, name = split_principal(ref)
        if kind == "team" and not allow_team:
            raise E.ValidationError(f"principal: {ref!r} must be a user or a service account")
        e = self._require(kind, name)
        if kind == "team" and e.status == "deleted":
            raise E.UnknownEntity(f"team {name!r} was deleted")
        return e

    def _new(self, kind: str, name: str, *, reuse_deleted: bool = False) -> None:
        e = self.entity(kind, name)
        if e is not None and not (reuse_deleted and e.status == "deleted"):
            label = kind.replace("_", " ")
            if e.status == "deleted":
                raise E.DuplicateEntity(f"{label} {name!r} was deleted; its name is not reused")
            raise E.DuplicateEntity(f"{label} {name!r} already exists")

    def _on_OrganizationCreated(self, ev: dict[str, Any]) -> str:
        if self.vocab is not None:
            raise E.AlreadyInitialized("the ledger already has an organization")
        data: dict[str, Any] = {"name": ev["name"], "preset": ev["preset"]}
        if ev.get("enforce_authority"):
            data["enforce_authority"] = True
        self._put(Entity("organization", "", "active", None, data))
        for role in predefined_roles(ev["preset"]).values():
            self._put(
                Entity(
                    "role",
                    role.name,
                    "active",
                    None,
                    {"scope": role.scope, "permissions": list(role.permissions), "predefined": True},
                )
            )
        self.vocab = vocabulary(ev["preset"])
        self.authority = default_rules(ev["preset"]) if ev.get("enforce_authority") else None
        self._by_ledger = bool(ev.get("enforce_authority"))
        return "organization"

    def _on_TenantCreated(self, ev: dict[str, Any]) -> str:
        self._new("tenant", ev["tenant"])
        self._put(Entity("tenant", ev["tenant"], "active", None, {"display_name": ev.get("display_name")}))
        return f"tenant/{ev['tenant']}"

    def _on_TenantRenamed(self, ev: dict[str, Any]) -> str:
        t = self._tenant(ev["tenant"])
        t.data["display_name"] = ev["display_name"]
        self._put(t)
        return f"tenant/{ev['tenant']}"

    def _on_TenantDeleted(self, ev: dict[str, Any]) -> str:
        t = self._tenant(ev["tenant"])
        t.status = "deleted"
        self._put(t)
        return f"tenant/{ev['tenant']}"

    def _create_principal(self, kind: str, name: str, data: dict[str, Any]) -> str:
        self._new(kind, name)
        self._put(Entity(kind, name, "active", None, data))
        return f"{kind}/{name}"

    def _set_status(self, kind: str, name: str, status: str) -> str:
        e = self._require(kind, name)
        if e.status == status:
            word = "deactivated" if status == "deactivated" else "active"
            raise E.InactivePrincipal(f"{kind.replace('_', ' ')} {name!r} is already {word}")
        e.status = status
        self._put(e)
        return f"{kind}/{name}"

    def _on_UserCreated(self, ev: dict[str, Any]) -> str:
        return self._create_principal("user", ev["user"], {"email": ev.get("email")})

    def _on_UserDeactivated(self, ev: dict[str, Any]) -> str:
        return self._set_status("user", ev["user"], "deactivated")

    def _on_UserReactivated(self, ev: dict[str, Any]) -> str:
        return self._set_status("user", ev["user"], "active")

    def _on_ServiceAccountCreated(self, ev: dict[str, Any]) -> str:
        return self._create_principal("service_account", ev["service_account"], {})

    def _on_ServiceAccountDeactivated(self, ev: dict[str, Any]) -> str:
        return self._set_status("service_account", ev["service_account"], "deactivated")

    def _on_ServiceAccountReactivated(self, ev: dict[str, Any]) -> str:
        return self._set_status("service_account", ev["service_account"], "active")

    def _on_TeamCreated(self, ev: dict[str, Any]) -> str:
        self._new("team", ev["team"])
        self._put(Entity("team", ev["team"], "active", None, {}))
        return f"team/{ev['team']}"

    def _live_team(self, name: str) -> Entity:
        team = self._require("team", name)
        if team.status == "deleted":
            raise E.UnknownEntity(f"team {name!r} was deleted")
        return team

    def _on_TeamDeleted(self, ev: dict[str, Any]) -> str:
        team = self._live_team(ev["team"])
        team.status = "deleted"
        self._put(team)
        return f"team/{ev['team']}"

    def _on_TeamMemberAdded(self, ev: dict[str, Any]) -> str:
        self._live_team(ev["team"])
        self._principal(ev["member"], allow_team=False)
        if self.member(ev["team"], ev["member"]):
            raise E.MembershipError(f"{ev['member']} is already a member of team {ev['team']!r}")
        self._members[(ev["team"], ev["member"])] = True
        self._dirty_members.add((ev["team"], ev["member"]))
        return f"team/{ev['team']}"

    def _on_TeamMemberRemoved(self, ev: dict[str, Any]) -> str:
        self._live_team(ev["team"])
        if not self.member(ev["team"], ev["member"]):
            raise E.MembershipError(f"{ev['member']} is not a member of team {ev['team']!r}")
        self._members[(ev["team"], ev["member"])] = False
        self._dirty_members.add((ev["team"], ev["member"]))
        return f"team/{ev['team']}"

    def _role(self, name: str) -> Entity:
        role = self._require("role", name)
        if role.status == "deleted":
            raise E.UnknownEntity(f"unknown role {name!r} (it was deleted)")
        return role

    def _mutable_role(self, name: str) -> Entity:
        role = self._role(name)
        if role.data.get("predefined"):
            raise E.PredefinedRole(f"role {name!r} is predefined and cannot be changed")
        return role

    def _permissions(self, perms: list[str], scope: str, what: str) -> list[str]:
        assert self.vocab is not None
        seen: list[str] = []
        for p in perms:
            self.vocab.parse_permission(p, scope, what)
            if p in seen:
                raise E.ValidationError(f"{what}: {p!r} is listed twice")
            seen.append(p)
        return seen

    def _on_RoleCreated(self, ev: dict[str, Any]) -> str:
        name, scope, base = ev["role"], ev["scope"], ev.get("base")
        existing = self.entity("role", name)
        if existing is not None and existing.status != "deleted":
            raise E.DuplicateEntity(f"role {name!r} already exists")
        if base is not None:
            b = self._role(base)
            if b.data["scope"] != scope:
                raise E.ScopeMismatch(f"base role {base!r} has {b.data['scope']} scope, not {scope}")
            seen = {name}
            cur: Entity | None = b
            while cur is not None:
                if cur.name in seen:
                    raise E.RoleCycle(f"role {name!r} with base {base!r} would make a cycle of base roles")
                seen.add(cur.name)
                cur = self.entity("role", cur.ref) if cur.ref else None
        perms = self._permissions(ev["permissions"], scope, "permissions")
        self._put(Entity("role", name, "active", base, {"scope": scope, "permissions": perms, "predefined": False}))
        return f"role/{name}"

    def _on_RolePermissionsChanged(self, ev: dict[str, Any]) -> str:
        role = self._mutable_role(ev["role"])
        scope = role.data["scope"]
        add = self._permissions(ev.get("add", []), scope, "add")
        remove = self._permissions(ev.get("remove", []), scope, "remove")
        if not add and not remove:
            raise E.ValidationError("nothing to change: give permissions to add or to remove")
        current = list(role.data["permissions"])
        for p in remove:
            if p not in current:
                raise E.ValidationError(f"remove: role {role.name!r} does not have permission {p!r}")
            current.remove(p)
        for p in add:
            if p in current:
                raise E.ValidationError(f"add: role {role.name!r} already has permission {p!r}")
            current.append(p)
        role.data["permissions"] = current
        self._put(role)
        return f"role/{role.name}"

    def _on_RoleDeleted(self, ev: dict[str, Any]) -> str:
        role = self._mutable_role(ev["role"])
        self.flush()  # the questions below are asked of the tables
        self.c.execute("SELECT principal, tenant FROM al_grants WHERE role = ? LIMIT 1", (role.name,))
        held = self.c.fetchone()
        if held is not None:
            where = f" in tenant {held[1]!r}" if held[1] else ""
            raise E.RoleInUse(f"role {role.name!r} is assigned (to {held[0]}{where}): unassign it first")
        self.c.execute(
            "SELECT name FROM al_entities WHERE kind = 'role' AND ref = ? AND status = 'active' LIMIT 1", (role.name,)
        )
        derived = self.c.fetchone()
        if derived is not None:
            raise E.RoleInUse(f"role {role.name!r} is the base of role {derived[0]!r}")
        role.status = "deleted"
        self._put(role)
        return f"role/{role.name}"

    def _assignment_key(self, ev: dict[str, Any], *, revoking: bool) -> tuple[str, str, str, str]:
        assert self.vocab is not None
        role = self._role(ev["role"])
        tenant, resource = ev.get("tenant"), ev.get("resource")
        scope = role.data["scope"]
        if scope == "organization":
            if tenant is not None or resource is not None:
                raise E.ScopeMismatch(f"role {role.name!r} is an organization role: give no tenant or resource")
        else:
            if tenant is None:
                raise E.ScopeMismatch(f"role {role.name!r} is a tenant role: give --tenant")
            self._tenant(tenant)
            if resource is not None:
                rtype, _ = split_resource(resource)
                if rtype not in self.vocab.tenant_types:
                    raise E.ValidationError(f"resource: {rtype!r} is not a tenant resource type")
        kind, name = split_principal(ev["principal"])
        p = self._require(kind, name)
        if kind == "team" and p.status == "deleted" and not revoking:
            raise E.UnknownEntity(f"team {name!r} was deleted")
        return (role.name, ev["principal"], tenant or "", resource or "")

    def _grant_stream(self, key: tuple[str, str, str, str]) -> str:
        return "grant/" + json.dumps(key)

    def _on_RoleAssigned(self, ev: dict[str, Any]) -> str:
        key = self._assignment_key(ev, revoking=False)
        expires = ev.get("expires_at")
        if expires is not None and expires <= ev["at"]:
            raise E.ValidationError(f"expires_at: {expires} is not after the assignment time {ev['at']}")
        if self.grant(key) is not _MISSING:
            raise E.AlreadyAssigned(
                f"{ev['principal']} already holds role {key[0]!r}{_where(key)}"
                " (unassign it first, even if it has expired)"
            )
        self._grants[key] = expires or ""
        self._dirty_grants.add(key)
        return self._grant_stream(key)

    def _on_RoleUnassigned(self, ev: dict[str, Any]) -> str:
        key = self._assignment_key(ev, revoking=True)
        if self.grant(key) is _MISSING:
            raise E.NotAssigned(f"{ev['principal']} does not hold role {key[0]!r}{_where(key)}")
        self._grants[key] = _MISSING
        self._dirty_grants.add(key)
        return self._grant_stream(key)

    def _connector(self, ev: dict[str, Any]) -> Entity:
        self._tenant(ev["tenant"])
        c = self.entity("connector", f"{ev['tenant']}/{ev['connector']}")
        if c is None or c.status == "deleted":
            raise E.UnknownEntity(f"unknown service connector {ev['connector']!r} in tenant {ev['tenant']!r}")
        return c

    def _on_ConnectorRegistered(self, ev: dict[str, Any]) -> str:
        self._tenant(ev["tenant"])
        key = f"{ev['tenant']}/{ev['connector']}"
        existing = self.entity("connector", key)
        if existing is not None and existing.status != "deleted":
            raise E.DuplicateEntity(f"service connector {ev['connector']!r} already exists in tenant {ev['tenant']!r}")
        self._put(Entity("connector", key, "active", ev["tenant"], {"connector_type": ev.get("connector_type")}))
        return f"connector/{key}"

    def _on_ConnectorDeleted(self, ev: dict[str, Any]) -> str:
        c = self._connector(ev)
        c.status = "deleted"
        self._put(c)
        return f"connector/{c.name}"

    def _on_ConnectorSecretAccessed(self, ev: dict[str, Any]) -> str:
        self._connector(ev)
        self._principal(ev["principal"], allow_team=False)
        return ""

    def _on_ResourceAccessed(self, ev: dict[str, Any]) -> str:
        assert self.vocab is not None
        self._principal(ev["principal"], allow_team=False)
        rtype, _ = self.vocab.parse_resource(ev["resource"])
        self.vocab.check_action(ev["action"])
        if ev.get("tenant") is not None:
            self._tenant(ev["tenant"])
            if rtype not in self.vocab.tenant_types:
                raise E.ValidationError(f"resource: {rtype!r} is an organization type: give no tenant")
        elif rtype not in self.vocab.org_types:
            raise E.ValidationError(f"tenant: required for the tenant resource type {rtype!r}")
        return ""

    # -- access review campaigns (the population itself is checked by the composition root) ---

    def _campaign(self, name: str) -> Entity:
        c = self.entity("campaign", name)
        if c is None:
            raise E.UnknownEntity(f"unknown review campaign {name!r}")
        return c

    def _reviewer(self, ref: str) -> None:
        self._principal(ref, allow_team=False)

    def _on_ReviewStarted(self, ev: dict[str, Any]) -> str:
        name = ev["campaign"]
        if self.entity("campaign", name) is not None:
            raise E.DuplicateEntity(f"review campaign {name!r} already exists")
        for tenant in ev["tenants"]:
            self._tenant(tenant)
        if len(set(ev["tenants"])) != len(ev["tenants"]):
            raise E.ValidationError("tenants: a tenant is listed twice")
        self._reviewer(ev["reviewer"])
        teams: list[str] = []
        for pair in ev.get("reviewers", []):
            team, reviewer = pair.split("=", 1)
            self._live_team(team.split(":", 1)[1])
            self._reviewer(reviewer)
            if team in teams:
                raise E.ValidationError(f"reviewers: {team} is given two reviewers")
            teams.append(team)
        if ev.get("fallback_reviewer"):
            self._reviewer(ev["fallback_reviewer"])
        if ev.get("due") is not None and ev["due"] <= ev["at"]:
            raise E.ValidationError(f"due: {ev['due']} is not after the start {ev['at']}")
        self._put(
            Entity(
                "campaign",
                name,
                "open",
                None,
                {"owner": ev["actor"], "items": ev["items"], "as_of_position": ev["as_of_position"], "decisions": {}},
            )
        )
        return f"campaign/{name}"

    def _on_ReviewDecided(self, ev: dict[str, Any]) -> str:
        c = self._campaign(ev["campaign"])
        if c.status != "open":
            raise E.ReviewRefused(f"review campaign {c.name!r} is closed: no decision after close")
        item = ev["item"]
        if item > c.data["items"]:
            raise E.ReviewRefused(
                f"item: {item} is not an item of review campaign {c.name!r} (it has {c.data['items']})"
            )
        if ev["reviewer"] != ev["actor"]:
            raise E.ReviewRefused(f"reviewer: {ev['reviewer']} is not the actor {ev['actor']}")
        if str(item) in c.data["decisions"]:
            raise E.ReviewRefused(
                f"item {item} of review campaign {c.name!r} is already decided ({c.data['decisions'][str(item)]})"
            )
        batch = ev.get("batch")
        if batch is not None:
            # A batch is one file recorded at once by one reviewer: every decision of it in one write,
            # with one actor and file hash (what the rubber-stamp rule judges it by).
            batches = c.data.setdefault("batches", {})
            mine = [ev["actor"], ev["batch_sha256"]]
            if batch in batches and (c.name, batch) not in self._batches_here:
                raise E.ReviewRefused(
                    f"batch: {batch} of review campaign {c.name!r} was recorded in an earlier "
                    "write: a batch's decisions are recorded at once"
                )
            if batches.get(batch, mine) != mine:
                actor, sha = batches[batch]
                raise E.ReviewRefused(
                    f"batch: {batch} of review campaign {c.name!r} was recorded by {actor} "
                    f"from a file with SHA-256 {sha}: each of its decisions must say the same"
                )
            batches[batch] = mine
            self._batches_here.add((c.name, batch))
        c.data["decisions"][str(item)] = ev["decision"]
        self._put(c)
        return f"campaign/{c.name}"

    def _on_ReviewReassigned(self, ev: dict[str, Any]) -> str:
        c = self._campaign(ev["campaign"])
        if ev["actor"] != c.data["owner"]:
            raise E.ReviewRefused(
                f"actor: only the owner of review campaign {c.name!r} ({c.data['owner']}) "
                f"reassigns its items, not {ev['actor']}"
            )
        if c.status != "open":
            raise E.ReviewRefused(f"review campaign {c.name!r} is closed: no reassignment after close")
        seen: set[int] = set()
        for item in ev["items"]:
            if item > c.data["items"]:
                raise E.ReviewRefused(
                    f"items: {item} is not an item of review campaign {c.name!r} (it has {c.data['items']})"
                )
            if item in seen:
                raise E.ReviewRefused(f"items: item {item} is given twice")
            seen.add(item)
            if str(item) in c.data["decisions"]:
                raise E.ReviewRefused(
                    f"items: item {item} of review campaign {c.name!r} is already decided "
                    f"({c.data['decisions'][str(item)]})"
                )
        if ev["reviewer"].startswith("team:"):
            raise E.ValidationError(f"reviewer: {ev['reviewer']!r} must be a user or a service account")
        reviewer = self._principal(ev["reviewer"])
        if reviewer.status != "active":
            raise E.InactivePrincipal(f"reviewer: {ev['reviewer']} is deactivated")
        return f"campaign/{c.name}"

    def _on_ReviewClosed(self, ev: dict[str, Any]) -> str:
        c = self._campaign(ev["campaign"])
        if c.status != "open":
            raise E.ReviewRefused(f"review campaign {c.name!r} is already closed")
        c.status = "closed"
        self._put(c)
        return f"campaign/{c.name}"

    # -- service tokens (the secret itself never reaches the ledger: only its SHA-256) ---------

    def _on_TokenIssued(self, ev: dict[str, Any]) -> str:
        token_id = ev["token_id"]
        if self.entity("token", token_id) is not None:
            raise E.DuplicateEntity(f"token {token_id!r} already exists; a token id is never reused")
        holder = self._principal(ev["principal"], allow_team=False)
        if holder.status != "active":
            raise E.InactivePrincipal(f"principal: {ev['principal']} is deactivated: no token for it")
        if len(set(ev["scopes"])) != len(ev["scopes"]):
            raise E.ValidationError("scopes: a scope is listed twice")
        expires = ev.get("expires_at")
        if expires is not None and expires <= ev["at"]:
            raise E.ValidationError(f"expires_at: {expires} is not after the issue time {ev['at']}")
        self._put(
            Entity(
                "token",
                token_id,
                "active",
                ev["principal"],
                {"scopes": list(ev["scopes"]), "expires_at": expires, "secret_sha256": ev["secret_sha256"]},
            )
        )
        return f"token/{token_id}"

    def _on_TokenUsed(self, ev: dict[str, Any]) -> str:
        token = self.entity("token", ev["token_id"])
        if token is None:
            raise E.UnknownEntity(f"token_id: unknown token {ev['token_id']!r}")
        if ev["actor"] != token.ref:
            # A use is its holder's: nobody else can make a never-used token look used.
            raise E.ValidationError(f"actor: token {token.name!r} is held by {token.ref}, not {ev['actor']}")
        if token.data.get("used"):
            raise E.DuplicateEntity(f"token_id: the use of token {token.name!r} is recorded already")
        token.data = {**token.data, "used": True}
        self._put(token)
        return f"token/{token.name}"

    def _on_TokenRevoked(self, ev: dict[str, Any]) -> str:
        token = self.entity("token", ev["token_id"])
        if token is None:
            raise E.UnknownEntity(f"token_id: unknown token {ev['token_id']!r}")
        if token.status == "revoked":
            raise E.ValidationError(f"token_id: token {ev['token_id']!r} is already revoked")
        token.status = "revoked"
        self._put(token)
        return f"token/{token.name}"

    # -- what a ZenML server's sync records: connector attributes, service accounts' API keys, projects --

    def _on_ConnectorChanged(self, ev: dict[str, Any]) -> str:
        c = self._connector(ev)
        if ev.get("owner") is not None:
            self._principal(ev["owner"], allow_team=False)
        for field_name in ("owner", "connector_type", "auth_method", "expires_at"):
            c.data[field_name] = ev.get(field_name)
        self._put(c)
        return f"connector/{c.name}"

    def _api_key(self, ev: dict[str, Any], *statuses: str) -> Entity:
        account = self._require("service_account", ev["service_account"])
        key = self.entity("api_key", f"{account.name}/{ev['api_key']}")
        if key is None or key.status == "deleted":
            raise E.UnknownEntity(f"unknown API key {ev['api_key']!r} of service account {account.name!r}")
        if statuses and key.status not in statuses:
            raise E.ValidationError(
                f"api_key: API key {ev['api_key']!r} of service account {account.name!r} is {key.status}"
            )
        return key

    def _on_ApiKeyCreated(self, ev: dict[str, Any]) -> str:
        account = self._require("service_account", ev["service_account"])
        name = f"{account.name}/{ev['api_key']}"
        existing = self.entity("api_key", name)
        if existing is not None and existing.status != "deleted":
            raise E.DuplicateEntity(f"API key {ev['api_key']!r} of service account {account.name!r} already exists")
        self._put(Entity("api_key", name, "active", account.name, {}))
        return f"api_key/{name}"

    def _on_ApiKeyRotated(self, ev: dict[str, Any]) -> str:
        key = self._api_key(ev)
        if ev["rotated_at"] > ev["at"]:
            raise E.ValidationError(f"rotated_at: {ev['rotated_at']} is after the event's time {ev['at']}")
        key.data["rotated_at"] = ev["rotated_at"]
        self._put(key)
        return f"api_key/{key.name}"

    def _on_ApiKeyDeactivated(self, ev: dict[str, Any]) -> str:
        key = self._api_key(ev, "active")
        key.status = "deactivated"
        self._put(key)
        return f"api_key/{key.name}"

    def _on_ApiKeyReactivated(self, ev: dict[str, Any]) -> str:
        key = self._api_key(ev, "deactivated")
        key.status = "active"
        self._put(key)
        return f"api_key/{key.name}"

    def _on_ApiKeyDeleted(self, ev: dict[str, Any]) -> str:
        key = self._api_key(ev)
        key.status = "deleted"
        self._put(key)
        return f"api_key/{key.name}"

    def _on_ApiKeyUsed(self, ev: dict[str, Any]) -> str:
        key = self._api_key(ev)
        if ev["last_login"] > ev["at"]:
            raise E.ValidationError(f"last_login: {ev['last_login']} is after the event's time {ev['at']}")
        return f"api_key/{key.name}"

    def _on_ProjectCreated(self, ev: dict[str, Any]) -> str:
        self._tenant(ev["tenant"])
        name = f"{ev['tenant']}/{ev['project']}"
        existing = self.entity("project", name)
        if existing is not None and existing.status != "deleted":
            raise E.DuplicateEntity(f"project {ev['project']!r} already exists in tenant {ev['tenant']!r}")
        self._put(Entity("project", name, "active", ev["tenant"], {}))
        return f"project/{name}"

    def _on_ProjectDeleted(self, ev: dict[str, Any]) -> str:
        self._tenant(ev["tenant"])
        p = self.entity("project", f"{ev['tenant']}/{ev['project']}")
        if p is None or p.status == "deleted":
            raise E.UnknownEntity(f"unknown project {ev['project']!r} in tenant {ev['tenant']!r}")
        p.status = "deleted"
        self._put(p)
        return f"project/{p.name}"

    # -- triage of audit findings (issue 29): who may decide is the authority rules' business; here, what --

    def _not_own(self, ev: dict[str, Any], what: str) -> None:
        if ev.get("principal") is not None and ev["principal"] == ev["actor"]:
            raise E.Unauthorised(f"actor: {ev['actor']} may not {what} a finding about themselves")
        if ev.get("until") is not None and ev["until"] <= ev["at"]:
            raise E.ValidationError(f"until: {ev['until']} is not after the decision's time {ev['at']}")

    def _not_caused(self, ev: dict[str, Any], what: str) -> None:
        """Refuse a decision about a finding the actor's own change caused, when the ledger holds that change."""
        from ledger.findings import cause_positions

        if self._stored is None or ev["actor"] == "system":
            return
        for pos, state in self._stored(cause_positions(ev["cause"])):
            caused = json.loads(state)
            if caused.get("actor") == ev["actor"]:
                raise E.Unauthorised(
                    f"actor: {ev['actor']} may not {what} finding {ev['finding']}: their own change "
                    f"(position {pos}, {caused.get('type')}) caused it"
                )

    def _decide(self, ev: dict[str, Any], state: str) -> str:
        what = "accept" if state == "accepted" else "suppress"
        self._not_own(ev, what)
        self._not_caused(ev, what)
        name = ev["finding"]
        self._put(Entity("finding", name, state, ev["audit"], {"until": ev.get("until")}))
        return f"finding/{name}"

    def _on_FindingAccepted(self, ev: dict[str, Any]) -> str:
        return self._decide(ev, "accepted")

    def _on_FindingSuppressed(self, ev: dict[str, Any]) -> str:
        return self._decide(ev, "suppressed")

    def _on_SuppressionRuleAdded(self, ev: dict[str, Any]) -> str:
        self._not_own(ev, "suppress")
        self._principal(ev["principal"])
        if ev.get("tenant") is not None:
            self._require("tenant", ev["tenant"])
        self._put(Entity("finding_rule", ev["rule"], "active", ev["audit"], {"until": ev.get("until")}))
        return f"finding_rule/{ev['rule']}"

    def _on_FindingReopened(self, ev: dict[str, Any]) -> str:
        kind, name = ("finding", ev["finding"]) if ev.get("finding") else ("finding_rule", ev["rule"])
        e = self._require(kind, name, "finding" if kind == "finding" else "suppression rule")
        if e.status == "reopened":
            raise E.ValidationError(f"{name} is open already (reopened earlier): nothing to reopen")
        e.status = "reopened"
        self._put(e)
        return f"{kind}/{name}"


def _where(key: tuple[str, str, str, str]) -> str:
    out = f" in tenant {key[2]!r}" if key[2] else ""
    return out + (f" on {key[3]}" if key[3] else "")
