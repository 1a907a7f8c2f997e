"""Random valid histories for the property tests, shared by the projection, warehouse and import tests.

Commands are drawn at random and applied in order; a refused one writes nothing and is skipped,
so what remains is a random valid history. Each test chooses the times its events carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import strategies as st

from ledger import errors as E
from ledger.app import AccessLedger

NAMES = st.sampled_from(["alice", "bob", "carol"])
USERS = NAMES.map("user:{}".format)
MEMBERS = st.one_of(USERS, st.just("service_account:ci"))
TENANTS = st.sampled_from(["prod", "dev"])
TENANT_ROLES = st.sampled_from(["viewer", "editor", "admin", "c1", "c2", "c3"])
ORG_ROLES = st.sampled_from(["org_viewer", "org_admin", "o1"])
PERMS = st.lists(
    st.sampled_from(
        [
            "model:read",
            "model:promote",
            "pipeline:*",
            "*:update",
            "secret:read",
            "service_connector:read_secret_value",
            "*:*",
        ]
    ),
    unique=True,
    max_size=3,
)
ORG_PERMS = st.lists(st.sampled_from(["tenant:read", "member:*", "*:update", "role:update"]), unique=True, max_size=2)
RESOURCES = st.sampled_from([None, None, None, "model/m1", "pipeline/p1", "service_connector/aws"])
# Expiry instants that coincide with event times (hours 0 and 12 of the days events use).
EXPIRES = st.sampled_from(
    [
        None,
        None,
        None,
        "2026-02-03T00:00:00Z",
        "2026-02-04T12:00:00Z",
        "2026-02-06T00:00:00Z",
        "2026-02-09T12:00:00Z",
        "2026-02-14T00:00:00Z",
    ]
)


def commands(names: st.SearchStrategy[str] = NAMES) -> st.SearchStrategy[tuple[Any, ...]]:
    """One command of the application (method name, then its arguments), on users named from `names`."""
    users = names.map("user:{}".format)
    members = st.one_of(users, st.just("service_account:ci"))
    principals = st.one_of(users, st.sampled_from(["team:ml", "team:ops", "service_account:ci"]))
    teams = st.sampled_from(["ml", "ops"])

    def cmd(name: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
        return st.tuples(st.just(name), *args)

    return st.one_of(
        cmd("create_tenant", TENANTS),
        cmd("delete_tenant", TENANTS),
        cmd("create_user", names),
        cmd("deactivate_user", names),
        cmd("reactivate_user", names),
        cmd("create_service_account", st.just("ci")),
        cmd("deactivate_service_account", st.just("ci")),
        cmd("reactivate_service_account", st.just("ci")),
        cmd("create_team", teams),
        cmd("delete_team", teams),
        cmd("add_team_member", teams, members),
        cmd("remove_team_member", teams, members),
        cmd("create_role", st.just("c1"), st.just("tenant"), PERMS, st.sampled_from([None, "viewer"])),
        cmd("create_role", st.just("c2"), st.just("tenant"), PERMS, st.sampled_from(["c1", "editor"])),
        cmd("create_role", st.just("c3"), st.just("tenant"), PERMS, st.sampled_from(["c2", "c1"])),
        cmd("create_role", st.just("o1"), st.just("organization"), ORG_PERMS, st.sampled_from([None, "org_viewer"])),
        cmd("change_role", st.sampled_from(["c1", "c2", "c3"]), PERMS, PERMS),
        cmd("change_role", st.just("o1"), ORG_PERMS, ORG_PERMS),
        cmd("delete_role", st.sampled_from(["c1", "c2", "c3", "o1"])),
        cmd("assign_role", TENANT_ROLES, principals, TENANTS, RESOURCES, EXPIRES),
        cmd("assign_role", TENANT_ROLES, principals, TENANTS, RESOURCES, EXPIRES),
        cmd("unassign_role", TENANT_ROLES, principals, TENANTS, RESOURCES),
        cmd("assign_role", ORG_ROLES, principals, st.none(), st.none(), EXPIRES),
        cmd("unassign_role", ORG_ROLES, principals),
        cmd("assign_role", TENANT_ROLES, users, TENANTS, st.none(), st.none()),
        cmd("assign_role", TENANT_ROLES, st.just("team:ml"), TENANTS, st.none(), EXPIRES),
        cmd("add_team_member", teams, members),
        cmd("register_connector", st.just("aws"), TENANTS),
        cmd("record_connector_access", st.just("aws"), TENANTS, users, st.sampled_from(["allowed", "denied"])),
        cmd("record_access", users, st.just("read"), st.just("model/m1"), st.just("allowed"), TENANTS),
    )


COMMANDS = commands()


def apply_commands(
    led: AccessLedger, drawn: Iterable[tuple[Any, ...]], time: Callable[[int], str], first: int = 0
) -> None:
    """Apply drawn commands in order, the i-th (counting from `first`) at time(i); refused ones are skipped."""
    for i, (name, *args) in enumerate(drawn, first):
        if name == "change_role":
            role, add, remove = args
            args = [role, [p for p in add if p not in remove], remove]
        try:
            getattr(led, name)(*args, at=time(i))
        except E.LedgerError:
            pass  # a refused command writes nothing
