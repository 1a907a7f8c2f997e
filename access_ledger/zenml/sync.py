"""`sync zenml`: compare a ZenML server's access-relevant state with the ledger's record of it, and record
the differences as events (actor `system`, a reason naming the server), all in one transaction.

The ledger's side is folded from the chained events themselves (never from side tables), incrementally
from the position the previous pass reached. How a ZenML 0.98 OSS server is modelled (preset
zenml-oss-098): the server is one tenant; every account it has (user or service account) is a member of
the team `TENANT-accounts`, which holds the tenant role `member` and, per connector, `connector_user`
scoped to `service_connector/NAME`; `is_admin` is the organization role `admin`. An account deleted on
the server leaves the team, loses `admin` and is deactivated (the ledger never forgets a name).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from access_ledger.zenml.client import Account, ZenMLClient, ZenMLError
from ledger.app import AccessLedger
from ledger.timeutil import format_instant, now, parse_instant

PRESET = "zenml-oss-098"
_KIND_FIELD = {"user": "user", "service_account": "service_account"}
_CREATED = {"user": "UserCreated", "service_account": "ServiceAccountCreated"}
_DEACTIVATED = {"user": "UserDeactivated", "service_account": "ServiceAccountDeactivated"}
_REACTIVATED = {"user": "UserReactivated", "service_account": "ServiceAccountReactivated"}


def team_of(tenant: str) -> str:
    return f"{tenant}-accounts"


@dataclass
class LedgerView:
    """What the chained events say about one tenant's ZenML server (folded from `position` on)."""

    tenant: str
    position: int = 0
    newest_at: str | None = None
    preset: str | None = None
    tenant_state: str | None = None  # None | active | deleted
    team_live: bool = False
    member_role: bool = False
    principals: dict[str, bool] = field(default_factory=dict)  # ref -> active
    members: set[str] = field(default_factory=set)
    admins: set[str] = field(default_factory=set)
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)  # live ones: name -> attributes
    connector_grants: set[str] = field(default_factory=set)
    keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # live ones
    projects: set[str] = field(default_factory=set)

    def catch_up(self, led: AccessLedger) -> None:
        for pos, ev in led.read(self.position + 1):
            self.apply(ev)
            self.position = pos
            self.newest_at = ev["at"]

    def apply(self, ev: dict[str, Any]) -> None:
        kind, t = ev["type"], self.tenant
        if kind == "OrganizationCreated":
            self.preset = ev["preset"]
        elif kind in ("TenantCreated", "TenantDeleted") and ev["tenant"] == t:
            self.tenant_state = "active" if kind == "TenantCreated" else "deleted"
        elif kind in _CREATED.values():
            field_name = "user" if kind == "UserCreated" else "service_account"
            self.principals[f"{field_name}:{ev[field_name]}"] = True
        elif kind in _DEACTIVATED.values() or kind in _REACTIVATED.values():
            field_name = "user" if kind.startswith("User") else "service_account"
            self.principals[f"{field_name}:{ev[field_name]}"] = kind.endswith("Reactivated")
        elif kind in ("TeamCreated", "TeamDeleted") and ev["team"] == team_of(t):
            self.team_live = kind == "TeamCreated"
            if not self.team_live:
                self.members.clear()
        elif kind in ("TeamMemberAdded", "TeamMemberRemoved") and ev["team"] == team_of(t):
            (self.members.add if kind == "TeamMemberAdded" else self.members.discard)(ev["member"])
        elif kind in ("RoleAssigned", "RoleUnassigned"):
            held = kind == "RoleAssigned"
            if ev["role"] == "admin" and "tenant" not in ev:
                (self.admins.add if held else self.admins.discard)(ev["principal"])
            elif ev.get("tenant") == t and ev["principal"] == f"team:{team_of(t)}":
                if ev["role"] == "member" and "resource" not in ev:
                    self.member_role = held
                elif ev["role"] == "connector_user" and "resource" in ev:
                    name = ev["resource"].split("/", 1)[1]
                    (self.connector_grants.add if held else self.connector_grants.discard)(name)
        elif kind == "ConnectorRegistered" and ev["tenant"] == t:
            self.connectors[ev["connector"]] = {}
        elif kind == "ConnectorChanged" and ev["tenant"] == t and ev["connector"] in self.connectors:
            self.connectors[ev["connector"]] = _attributes(ev)
        elif kind == "ConnectorDeleted" and ev["tenant"] == t:
            self.connectors.pop(ev["connector"], None)
        elif kind.startswith("ApiKey"):
            key = (ev["service_account"], ev["api_key"])
            if kind == "ApiKeyCreated":
                self.keys[key] = {"active": True, "rotated_at": None, "last_login": None}
            elif key in self.keys:
                if kind == "ApiKeyDeleted":
                    del self.keys[key]
                elif kind in ("ApiKeyDeactivated", "ApiKeyReactivated"):
                    self.keys[key]["active"] = kind == "ApiKeyReactivated"
                elif kind == "ApiKeyRotated":
                    self.keys[key]["rotated_at"] = ev["rotated_at"]
                elif kind == "ApiKeyUsed":
                    self.keys[key]["last_login"] = ev["last_login"]
        elif kind in ("ProjectCreated", "ProjectDeleted") and ev["tenant"] == t:
            (self.projects.add if kind == "ProjectCreated" else self.projects.discard)(ev["project"])


def _attributes(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "owner": ev.get("owner"),
        "connector_type": ev.get("connector_type"),
        "auth_method": ev.get("auth_method"),
        "resource_types": list(ev.get("resource_types", [])),
        "expires_at": ev.get("expires_at"),
        "labels": list(ev.get("labels", [])),
    }


def server_time(text: str | None) -> str | None:
    """A ZenML time (naive, UTC) in the ledger's canonical form."""
    if text is None:
        return None
    value = datetime.fromisoformat(text) if "T" in text or " " in text else None
    if value is None:
        raise ZenMLError(f"the server's answer is not ZenML's: {text[:40]!r} is not a time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_instant(value)


@dataclass
class ServerState:
    accounts: list[Account]
    keys: dict[str, list[Any]]  # service account name -> its API keys
    connectors: list[Any]
    projects: list[Any]


def read_server(client: ZenMLClient) -> ServerState:
    accounts = client.accounts()
    keys = {a.name: client.api_keys(a.id) for a in accounts if a.kind == "service_account"}
    return ServerState(accounts, keys, client.connectors(), client.projects())


class _Plan:
    """Events to record, each dated no earlier than what it depends on (then sorted by time, stably)."""

    def __init__(self, reason: str, floor: str | None, instant: str):
        self.reason, self.floor, self.instant = reason, floor, instant
        self.events: list[dict[str, Any]] = []
        self.born: dict[str, str] = {}

    def add(
        self, kind: str, when: str | None, after: tuple[str, ...] = (), born: str | None = None, **fields: Any
    ) -> None:
        at = when or self.instant
        for dep in after:
            if dep in self.born and self.born[dep] > at:
                at = self.born[dep]
        if self.floor is not None and at < self.floor:
            at = self.floor  # the ledger never goes back in time: an older server time is recorded at its newest
        at = min(at, self.instant)
        if born is not None:
            self.born[born] = at
        self.events.append({"type": kind, "at": at, "actor": "system", **fields, "reason": self.reason})

    def ordered(self) -> list[dict[str, Any]]:
        key = {id(e): (parse_instant(e["at"]), n) for n, e in enumerate(self.events)}
        return sorted(self.events, key=lambda e: key[id(e)])


def plan(view: LedgerView, server: ServerState, reason: str, instant: str, org: str) -> list[dict[str, Any]]:
    """The events that make the ledger's record of the tenant what the server says now."""
    t, team = view.tenant, team_of(view.tenant)
    p = _Plan(reason, view.newest_at, instant)
    earliest = min([a.created for a in server.accounts] or [instant])
    start = server_time(earliest)
    if view.preset is None:
        p.add("OrganizationCreated", start, name=org, preset=PRESET, born="org")
    if view.tenant_state is None:
        p.add("TenantCreated", start, ("org",), born="tenant", tenant=t)
    if not view.team_live:
        p.add("TeamCreated", start, ("org",), born="team", team=team)
    if not view.member_role:
        p.add("RoleAssigned", start, ("tenant", "team"), role="member", principal=f"team:{team}", tenant=t)
    by_id: dict[str, str] = {}
    on_server: set[str] = set()
    for a in server.accounts:
        ref = f"{a.kind}:{a.name}"
        by_id[a.id] = ref
        on_server.add(ref)
        created, updated = server_time(a.created), server_time(a.updated)
        name_field = {_KIND_FIELD[a.kind]: a.name}
        if ref not in view.principals:
            p.add(_CREATED[a.kind], created, ("org",), born=ref, **name_field)
            if not a.active:
                p.add(_DEACTIVATED[a.kind], updated, (ref,), **name_field)
        elif view.principals[ref] != a.active:
            p.add((_REACTIVATED if a.active else _DEACTIVATED)[a.kind], updated, (ref,), born=ref, **name_field)
        if ref not in view.members:
            p.add("TeamMemberAdded", created, (ref, "team"), born=ref, team=team, member=ref)
        if a.is_admin and ref not in view.admins:
            p.add("RoleAssigned", updated if ref in view.principals else created, (ref,), role="admin", principal=ref)
        elif not a.is_admin and ref in view.admins:
            p.add("RoleUnassigned", updated, (ref,), role="admin", principal=ref)
    for ref in sorted(view.members - on_server):
        # Deleted on the server: it leaves the team and loses admin; the name stays, deactivated.
        if ref in view.admins:
            p.add("RoleUnassigned", None, role="admin", principal=ref)
        p.add("TeamMemberRemoved", None, team=team, member=ref)
        kind, name = ref.split(":", 1)
        if view.principals.get(ref) and kind in _DEACTIVATED:
            p.add(_DEACTIVATED[kind], None, **{kind: name})
    seen_keys: set[tuple[str, str]] = set()
    for account, keys in server.keys.items():
        ref = f"service_account:{account}"
        for k in keys:
            key = (account, k.name)
            seen_keys.add(key)
            names = {"service_account": account, "api_key": k.name}
            mine = view.keys.get(key)
            kref = f"key:{account}/{k.name}"
            if mine is None:
                p.add("ApiKeyCreated", server_time(k.created), (ref,), born=kref, **names)
                mine = {"active": True, "rotated_at": None, "last_login": None}
            if mine["active"] != k.active:
                p.add(
                    "ApiKeyReactivated" if k.active else "ApiKeyDeactivated", server_time(k.updated), (kref,), **names
                )
            rotated = server_time(k.last_rotated)
            if rotated is not None and rotated != mine["rotated_at"]:
                p.add("ApiKeyRotated", rotated, (kref,), born=kref, rotated_at=min(rotated, instant), **names)
            login = server_time(k.last_login)
            if login is not None and login != mine["last_login"]:
                p.add("ApiKeyUsed", login, (kref,), last_login=min(login, instant), **names)
    for account, kname in sorted(set(view.keys) - seen_keys):
        ref = f"service_account:{account}"
        if ref in view.members or ref in on_server:  # this server's accounts only (another's keys are its own)
            p.add("ApiKeyDeleted", None, service_account=account, api_key=kname)
    live: set[str] = set()
    for c in server.connectors:
        live.add(c.name)
        attrs = {
            "owner": by_id.get(c.owner_id or ""),
            "connector_type": c.connector_type,
            "auth_method": c.auth_method,
            "resource_types": list(c.resource_types),
            "expires_at": server_time(c.expires_at),
            "labels": list(c.labels),
        }
        cref = f"connector:{c.name}"
        deps = ("tenant", "team") + ((attrs["owner"],) if attrs["owner"] else ())
        if c.name not in view.connectors:
            extra = {"connector_type": c.connector_type} if c.connector_type else {}
            p.add("ConnectorRegistered", server_time(c.created), deps, born=cref, connector=c.name, tenant=t, **extra)
            changed_at = server_time(c.created)
        else:
            changed_at = server_time(c.updated)
        if view.connectors.get(c.name) != attrs:
            fields = {k: v for k, v in attrs.items() if v is not None and v != []}
            p.add("ConnectorChanged", changed_at, deps + (cref,), connector=c.name, tenant=t, **fields)
        if c.name not in view.connector_grants:
            p.add(
                "RoleAssigned",
                changed_at,
                deps + (cref,),
                role="connector_user",
                principal=f"team:{team}",
                tenant=t,
                resource=f"service_connector/{c.name}",
            )
    for name in sorted(set(view.connectors) - live):
        if name in view.connector_grants:
            p.add(
                "RoleUnassigned",
                None,
                role="connector_user",
                principal=f"team:{team}",
                tenant=t,
                resource=f"service_connector/{name}",
            )
        p.add("ConnectorDeleted", None, connector=name, tenant=t)
    projects = {pr.name: pr for pr in server.projects}
    for name, pr in sorted(projects.items()):
        if name not in view.projects:
            p.add("ProjectCreated", server_time(pr.created), ("tenant",), project=name, tenant=t)
    for name in sorted(view.projects - set(projects)):
        p.add("ProjectDeleted", None, project=name, tenant=t)
    return p.ordered()


@dataclass(frozen=True)
class SyncResult:
    url: str
    tenant: str
    recorded: int
    first: int | None
    last: int | None
    counts: dict[str, int]
    seconds: float
    server_seconds: float = 0.0  # of `seconds`, reading the ZenML server

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tenant": self.tenant,
            "recorded": self.recorded,
            "first_position": self.first,
            "last_position": self.last,
            "events": self.counts,
            "seconds": round(self.seconds, 3),
            "server_seconds": round(self.server_seconds, 3),
        }


class Syncer:
    """One server into one ledger's tenant; keeps its folded view between passes (the `--interval` loop)."""

    def __init__(self, led: AccessLedger, client: ZenMLClient, tenant: str, org: str = "zenml"):
        from ledger.vocabulary import check_name

        self.led, self.client = led, client
        self.tenant = check_name(tenant, "--tenant")
        self.org = org
        self.view = LedgerView(self.tenant)

    def once(self) -> SyncResult:
        from ledger.errors import ValidationError

        start = time.perf_counter()
        server = read_server(self.client)
        read = time.perf_counter() - start
        self.view.catch_up(self.led)
        if self.view.preset not in (None, PRESET):
            raise ValidationError(
                f"this ledger uses the {self.view.preset} preset; sync zenml records a ZenML OSS server "
                f"in a ledger of the {PRESET} preset (init --preset {PRESET}, or an empty ledger)"
            )
        if self.view.tenant_state == "deleted":
            raise ValidationError(f"--tenant: tenant {self.tenant!r} was deleted: nothing may be synced into it")
        reason = f"sync zenml from {self.client.url}"
        events = plan(self.view, server, reason, format_instant(now()), self.org)
        if not events:
            return SyncResult(self.client.url, self.tenant, 0, None, None, {}, time.perf_counter() - start, read)
        result = self.led.append_many(events)
        counts: dict[str, int] = {}
        for ev in events:
            counts[ev["type"]] = counts.get(ev["type"], 0) + 1
        return SyncResult(
            self.client.url,
            self.tenant,
            len(events),
            result.first,
            result.last,
            counts,
            time.perf_counter() - start,
            read,
        )


def loop(syncer: Syncer, interval: float, report: Callable[[SyncResult | Exception], None], stop: Any) -> None:
    """Sync every `interval` seconds until `stop` (a threading.Event) is set; a failed pass is reported and retried."""
    from ledger.errors import LedgerError

    while not stop.is_set():
        try:
            report(syncer.once())
        except (LedgerError, OSError) as exc:
            syncer.view = LedgerView(syncer.tenant)  # fold again: a refused write may have raced another writer
            report(exc)
        stop.wait(interval)
