"""The permission state as a casbin model and policy, for an enforcement engine to load.

Teams are expanded, deactivated principals and deleted tenants left out, expired assignments
dropped (the export is of one instant), and base roles flattened, so the casbin model needs no
role hierarchy: a policy line says who may do which action on which resource type (or one
resource) in which domain (a tenant, or `-` for the organization).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from projections.permissions import PermissionState

if TYPE_CHECKING:
    from ledger.app import AccessLedger

ORG_DOMAIN = "-"

MODEL = """[request_definition]
r = sub, dom, obj, typ, act

[policy_definition]
p = sub, dom, obj, typ, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && r.dom == p.dom && (p.obj == "*" || p.obj == r.obj) && (p.typ == "*" || p.typ == r.typ) && (p.act == "*" || p.act == r.act)
"""


def policy_lines(state: PermissionState, instant: str) -> list[tuple[str, str, str, str, str]]:
    """(sub, dom, obj, typ, act) rows equivalent to the state at `instant`."""
    rows: set[tuple[str, str, str, str, str]] = set()
    tenants = [None, *sorted(t for t, live in state.tenants.items() if live)]
    for principal in state.subjects():
        for tenant in tenants:
            for perm, scope, *_ in state.grants(principal, instant, tenant):
                ptype, action = perm.split(":", 1)
                obj = scope if scope is not None else "*"
                typ = scope.split("/", 1)[0] if scope is not None else ptype
                rows.add((principal, tenant if tenant is not None else ORG_DOMAIN, obj, typ, action))
    return sorted(rows)


def request(principal: str, action: str, resource: str, tenant: str | None) -> tuple[str, str, str, str, str]:
    """The casbin request for a question, in the model's order."""
    return (principal, tenant if tenant is not None else ORG_DOMAIN, resource, resource.split("/", 1)[0], action)


def write(state: PermissionState, instant: str, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "model.conf"
    policy = out_dir / "policy.csv"
    model.write_text(MODEL, encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in policy_lines(state, instant):
        writer.writerow(["p", *row])
    policy.write_text(buf.getvalue(), encoding="utf-8")
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
