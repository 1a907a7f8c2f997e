"""Stable ids of audit findings and of suppression rules (plain hashing: the write side checks them).

A finding's id is `F-` + 16 hex of SHA-256 over (audit, kind, principal, scope, cause): `cause` is
`p:` + the ledger positions of the events behind the row (the same on every backend and in a bundle),
or, for a row that names none, `d:` + 16 hex of SHA-256 over its fact columns. A new grant is a new
event, so a new finding; the same facts give the same id wherever the audit runs. An acceptance
names the finding's parts as well as its id, and the ledger recomputes the id from them, so an
acceptance cannot claim another principal than the finding's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

#: The audits whose rows can be findings (reports/findings.py ATTENTION names the same).
AUDIT_NAMES: tuple[str, ...] = (
    "least-privilege",
    "secrets",
    "sod",
    "hygiene",
    "reviews",
    "leavers",
    "authority",
)
FINDING_ID = re.compile(r"F-[0-9a-f]{16}")
RULE_ID = re.compile(r"R-[0-9a-f]{16}")
CAUSE = re.compile(r"p:[0-9]{1,19}(,[0-9]{1,19}){0,999}|d:[0-9a-f]{16}")


def _digest(parts: list[Any]) -> str:
    data = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def cause_of(positions: Iterable[int] | None, facts: dict[str, Any]) -> str:
    """What caused a finding: its events' positions, or a digest of its fact columns when it names none."""
    ps = sorted({int(p) for p in positions or ()})
    if ps:
        return "p:" + ",".join(str(p) for p in ps)
    return "d:" + _digest(sorted([k, v] for k, v in facts.items()))


def finding_id(audit: str, kind: str, principal: str | None, scope: str | None, cause: str) -> str:
    """The stable id of one finding."""
    return "F-" + _digest([audit, kind, principal or "", scope or "", cause])


def rule_id(audit: str, kind: str, principal: str, tenant: str | None) -> str:
    """The id of a suppression rule (one rule per audit, kind, principal and tenant)."""
    return "R-" + _digest(["rule", audit, kind, principal, tenant or ""])


def cause_positions(cause: str) -> list[int]:
    """The positions a cause names (none for a digest of facts)."""
    return [int(p) for p in cause[2:].split(",")] if cause.startswith("p:") else []
