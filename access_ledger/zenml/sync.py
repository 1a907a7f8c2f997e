"""`sync zenml`: compare a ZenML server's access-relevant state with the ledger's record of it, and record
the differences as events (actor `system`, a reason naming the server), all in one transaction.

The ledger's side is folded from the chained events themselves (never from side tables), incrementally
from the position the previous pass reached. How a ZenML 0.98 OSS server is modelled (preset
zenml-oss-098): the server is one tenant; every account it has (user or service account) is a member of
the team `TENANT-accounts`, which holds the tenant role `member` and, per connector, `connector_user`
scoped to `service_connector/NAME`; `is_admin` is the organization role `admin`. An account deleted on
the server leaves the team, loses `admin` and is deactivated (the ledger never forgets a name), each of
those events giving "deleted on the server" in its reason.

Reading the server: the first pass of a process reads every list whole. A later pass of the same process
(the `--interval` loop, `serve --sync-zenml`) asks each list only for the items updated since the server's
clock at the start of the previous pass, less a margin, and for its total: the items it kept from the
previous pass, updated by what changed, must be exactly that many, else something was deleted and the
pass reads everything again. What a pass read is kept in memory only: a watermark stored beside the chain
could be edited to make later passes blind to a change, so a new process starts with a full read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from access_ledger.zenml.client import FILTER_TIME, Account, ZenMLClient, ZenMLError
from ledger.app import AccessLedger
from ledger.errors import ValidationError
from ledger.events import parse_obj
from ledger.timeutil import format_instant, now, parse_instant
from ledger.vocabulary import check_name

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
    """A ZenML time (naive, UTC) in the ledger's canonical form (converted only for what is recorded: a pass
    with no change converts almost nothing)."""
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


#: ZenML stamps `updated` before it commits and its Date header counts whole seconds: a later pass asks
#: from this long before the previous pass began (what changed in the margin is compared again, harmlessly).
MARGIN = timedelta(seconds=10)


@dataclass(frozen=True)
class Snapshot:
    """The server's lists as one pass read them (by id), and the server time the next pass asks from."""

    since: str | None
    lists: dict[str, dict[str, Any]]
    full: bool  # this pass read every list whole
    listed: int  # items the server sent for the lists in this pass


def _readers(client: ZenMLClient) -> dict[str, Callable[[str | None], list[Any]]]:
    return {
        "/users": client.users,
        "/service_accounts": client.service_accounts,
        "/service_connectors": client.connectors,
        "/projects": client.projects,
    }


# expand_secrets=false on every request of /service_connectors, counting ones included.
_COUNT_PARAMS = {"/service_connectors": {"expand_secrets": "false"}}


def read_server(client: ZenMLClient, previous: Snapshot | None = None) -> tuple[ServerState, Snapshot]:
    """The server's state now; after a `previous` pass, only what changed since, if its totals show no deletion."""
    readers = _readers(client)
    totals = {"/users": client.total("/users")}
    mark = client.date  # the server's clock before any list is read
    lists: dict[str, dict[str, Any]] | None = None
    listed = 0
    if previous is not None and previous.since is not None:
        for path in readers:
            if path not in totals:
                totals[path] = client.total(path, _COUNT_PARAMS.get(path))
        lists = {}
        for path, read in readers.items():
            changed = read(previous.since)
            listed += len(changed)
            merged = {**previous.lists[path], **{item.id: item for item in changed}}
            if len(merged) != totals[path]:
                lists = None  # something was deleted (or created and deleted while we read): read it all
                break
            lists[path] = merged
    full = lists is None
    if lists is None:
        lists = {}
        for path, read in readers.items():
            items = read(None)
            listed += len(items)
            lists[path] = {item.id: item for item in items}
    accounts = [a for a in lists["/users"].values() if a.kind == "user"] + list(lists["/service_accounts"].values())
    keys = {a.name: client.api_keys(a.id) for a in accounts if a.kind == "service_account"}
    since = None if mark is None else (mark - MARGIN).strftime(FILTER_TIME)
    state = ServerState(accounts, keys, list(lists["/service_connectors"].values()), list(lists["/projects"].values()))
    return state, Snapshot(since, lists, full, listed)


def _shown(name: str) -> str:
    """A server's name in a message: quoted with its control characters escaped, and bounded."""
    return repr(name[:60]) + ("..." if len(name) > 60 else "")


def _refusal(name: str) -> str | None:
    """Why the ledger cannot record this server name as it is, or None."""
    try:
        stored = check_name(name, "name")
    except ValidationError as exc:
        return str(exc)
    if stored != name:
        return f"name: the ledger would store it as {_shown(stored)} (NFKC), which the server does not call it"
    return None


class _Plan:
    """Events to record, each dated no earlier than what it depends on (then sorted by time, stably)."""

    def __init__(self, reason: str, floor: str | None, instant: str):
        self.reason, self.floor, self.instant = reason, floor, instant
        self.events: list[dict[str, Any]] = []
        self.born: dict[str, str] = {}

    def add(
        self,
        kind: str,
        when: str | None,
        after: tuple[str, ...] = (),
        born: str | None = None,
        why: str | None = None,
        **fields: Any,
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
        reason = self.reason if why is None else f"{self.reason}: {why}"
        self.events.append({"type": kind, "at": at, "actor": "system", **fields, "reason": reason})

    def ordered(self) -> list[dict[str, Any]]:
        key = {id(e): (parse_instant(e["at"]), n) for n, e in enumerate(self.events)}
        return sorted(self.events, key=lambda e: key[id(e)])


def plan(
    view: LedgerView,
    server: ServerState,
    reason: str,
    instant: str,
    org: str,
    refused: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The events that make the ledger's record of the tenant what the server says now. What the ledger would
    refuse (a name it cannot hold, say) is left out, each with one line appended to `refused`."""
    t, team = view.tenant, team_of(view.tenant)
    refused = [] if refused is None else refused
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
        on_server.add(ref)
        problem = _refusal(a.name)
        if problem is not None:
            refused.append(f"{a.kind.replace('_', ' ')} {_shown(a.name)} not recorded: {problem}")
            continue
        by_id[a.id] = ref
        name_field = {_KIND_FIELD[a.kind]: a.name}
        if ref not in view.principals:
            p.add(_CREATED[a.kind], server_time(a.created), ("org",), born=ref, **name_field)
            if not a.active:
                p.add(_DEACTIVATED[a.kind], server_time(a.updated), (ref,), **name_field)
        elif view.principals[ref] != a.active:
            p.add(
                (_REACTIVATED if a.active else _DEACTIVATED)[a.kind],
                server_time(a.updated),
                (ref,),
                born=ref,
                **name_field,
            )
        if ref not in view.members:
            p.add("TeamMemberAdded", server_time(a.created), (ref, "team"), born=ref, team=team, member=ref)
        if a.is_admin and ref not in view.admins:
            p.add(
                "RoleAssigned",
                server_time(a.updated) if ref in view.principals else server_time(a.created),
                (ref,),
                role="admin",
                principal=ref,
            )
        elif not a.is_admin and ref in view.admins:
            p.add("RoleUnassigned", server_time(a.updated), (ref,), role="admin", principal=ref)
    for ref in sorted(view.members - on_server):
        # Deleted on the server: it leaves the team and loses admin; the name stays, deactivated. The ledger
        # has no deletion of a principal (a name is never forgotten or reused for someone else), so each of
        # these events says why in its reason, which `history` shows.
        gone = "deleted on the server"
        if ref in view.admins:
            p.add("RoleUnassigned", None, why=gone, role="admin", principal=ref)
        p.add("TeamMemberRemoved", None, why=gone, team=team, member=ref)
        kind, name = ref.split(":", 1)
        if view.principals.get(ref) and kind in _DEACTIVATED:
            p.add(_DEACTIVATED[kind], None, why=gone, **{kind: name})
    seen_keys: set[tuple[str, str]] = set()
    for account, keys in server.keys.items():
        ref = f"service_account:{account}"
        for k in keys:
            key = (account, k.name)
            seen_keys.add(key)
            if _refusal(account) is not None:
                continue  # the account itself was refused, and said so
            problem = _refusal(k.name)
            if problem is not None:
                refused.append(f"API key {_shown(k.name)} of service account {_shown(account)} not recorded: {problem}")
                continue
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
        problem = _refusal(c.name)
        if problem is not None:
            refused.append(f"connector {_shown(c.name)} not recorded: {problem}")
            continue
        start = len(p.events)
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
        new = c.name not in view.connectors
        if new:
            extra = {"connector_type": c.connector_type} if c.connector_type else {}
            p.add("ConnectorRegistered", server_time(c.created), deps, born=cref, connector=c.name, tenant=t, **extra)
        differs, ungranted = view.connectors.get(c.name) != attrs, c.name not in view.connector_grants
        if differs or ungranted:
            changed_at = server_time(c.created if new else c.updated)
            if differs:
                fields = {k: v for k, v in attrs.items() if v is not None and v != []}
                p.add("ConnectorChanged", changed_at, deps + (cref,), connector=c.name, tenant=t, **fields)
            if ungranted:
                p.add(
                    "RoleAssigned",
                    changed_at,
                    deps + (cref,),
                    role="connector_user",
                    principal=f"team:{team}",
                    tenant=t,
                    resource=f"service_connector/{c.name}",
                )
        try:
            for ev in p.events[start:]:
                parse_obj(ev)
        except ValidationError as exc:
            # One connector the ledger cannot hold (a label it refuses, say) must not stop the rest.
            del p.events[start:]
            p.born.pop(cref, None)
            refused.append(f"connector {_shown(c.name)} not recorded: {exc}")
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
        problem = _refusal(name)
        if problem is not None:
            refused.append(f"project {_shown(name)} not recorded: {problem}")
        elif name not in view.projects:
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
    full_read: bool = True  # every list was read whole (else only what changed since the previous pass)
    refused: tuple[str, ...] = ()  # what the ledger could not record, one line each

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
            "full_read": self.full_read,
            "refused": list(self.refused),
        }


class Syncer:
    """One server into one ledger's tenant; keeps its folded view between passes (the `--interval` loop)."""

    def __init__(self, led: AccessLedger, client: ZenMLClient, tenant: str, org: str = "zenml"):
        from ledger.vocabulary import check_name

        self.led, self.client = led, client
        self.tenant = check_name(tenant, "--tenant")
        self.org = org
        self.view = LedgerView(self.tenant)
        self.snapshot: Snapshot | None = None

    def forget(self) -> None:
        """Fold the ledger and read the server whole again on the next pass (after a failed one)."""
        self.view = LedgerView(self.tenant)
        self.snapshot = None

    def once(self) -> SyncResult:
        start = time.perf_counter()
        server, self.snapshot = read_server(self.client, self.snapshot)
        full = self.snapshot.full
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
        refused: list[str] = []
        events = plan(self.view, server, reason, format_instant(now()), self.org, refused)
        if not events:
            seconds = time.perf_counter() - start
            return SyncResult(self.client.url, self.tenant, 0, None, None, {}, seconds, read, full, tuple(refused))
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
            full,
            tuple(refused),
        )


def loop(syncer: Syncer, interval: float, report: Callable[[SyncResult | Exception], None], stop: Any) -> None:
    """Sync every `interval` seconds until `stop` (a threading.Event) is set; a failed pass is reported and retried."""
    from ledger.errors import LedgerError

    while not stop.is_set():
        try:
            report(syncer.once())
        except (LedgerError, OSError) as exc:
            syncer.forget()  # fold again and read everything: a refused write may have raced another writer
            report(exc)
        stop.wait(interval)
