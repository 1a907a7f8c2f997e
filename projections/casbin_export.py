"""The permission state as a casbin model and policy, for an enforcement engine to load.

RBAC with domains: a domain is a tenant (or `-` for the organization); `g` lines link a user
or service account to the roles it holds in a domain (directly, or through a team, which is a
role-like group of its own), and `p` lines say what each role allows, its base roles
flattened in. A resource-scoped assignment becomes a role of its own (`role:viewer@model/x`)
whose permissions apply to that one resource. The export is of one instant: deactivated
principals, deleted teams and tenants, and expired assignments are left out.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.private import write_private
from projections.permissions import PermissionState

if TYPE_CHECKING:
    from ledger.app import AccessLedger

ORG_DOMAIN = "-"

MODEL = """[request_definition]
r = sub, dom, obj, typ, act

[policy_definition]
p = sub, obj, typ, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && (p.obj == "*" || p.obj == r.obj) && (p.typ == "*" || p.typ == r.typ) && (p.act == "*" || p.act == r.act)
"""

Rows = tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str]]]


def policy_lines(state: PermissionState, instant: str) -> Rows:
    """(p rows: role, obj, typ, act) and (g rows: member, role or team, domain) for the state at `instant`."""
    p_rows: set[tuple[str, str, str, str]] = set()
    g_rows: set[tuple[str, str, str]] = set()
    for a in state.assignments.values():
        if a.role not in state.roles or not a.in_force(instant):
            continue
        if a.tenant is not None and not state.tenants.get(a.tenant, False):
            continue
        if not state.is_active(a.principal):
            continue
        domain = a.tenant if a.tenant is not None else ORG_DOMAIN
        role = f"role:{a.role}" + (f"@{a.resource}" if a.resource else "")
        scope_type = a.resource.split("/", 1)[0] if a.resource else None
        for perm, _chain, _src in state.effective_permissions(a.role):
            ptype, action = perm.split(":", 1)
            if scope_type is not None:
                if ptype not in ("*", scope_type):
                    continue
                p_rows.add((role, a.resource or "*", scope_type, action))
            else:
                p_rows.add((role, "*", ptype, action))
        g_rows.add((a.principal, role, domain))
        if a.principal.startswith("team:"):
            team = a.principal.split(":", 1)[1]
            for member in state.members.get(team, {}):
                if state.is_active(member):
                    g_rows.add((member, a.principal, domain))
    return sorted(p_rows), sorted(g_rows)


def request(principal: str, action: str, resource: str, tenant: str | None) -> tuple[str, str, str, str, str]:
    """The casbin request for a question, in the model's order."""
    return (principal, tenant if tenant is not None else ORG_DOMAIN, resource, resource.split("/", 1)[0], action)


def write(state: PermissionState, instant: str, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "model.conf"
    policy = out_dir / "policy.csv"
    write_private(model, MODEL)
    p_rows, g_rows = policy_lines(state, instant)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in p_rows:
        writer.writerow(["p", *row])
    for row in g_rows:
        writer.writerow(["g", *row])
    write_private(policy, buf.getvalue())
    return model, policy


def export_casbin(led: AccessLedger, out_dir: Path, at: str | None = None) -> tuple[Path, Path]:
    """Write model.conf and policy.csv for the state now (or at `at`)."""
    from ledger.timeutil import canonical, format_instant, now
    from projections.pit import Timeline

    timeline = Timeline(led)
    if at is None:
        state, instant = timeline.current(), format_instant(now())
    else:
        instant = canonical(at)
        state = timeline.at_time(instant)
    return write(state, instant, Path(out_dir))
