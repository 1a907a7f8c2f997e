"""A realistic organization's year of access history: the demo's data and the benchmarks' ledgers.

Two casts play on one engine. `SMALL` is acme-ml, the organization of ZenML's access-management
guide told as a story: research, staging and production tenants; the seed scenario's roles built
on the predefined ones; teams, CI service accounts, cloud connectors; a year of onboarding, role
changes, leavers, time-bound grants, secret reads by pipelines and people, and resource usage.
The other shapes (`LARGE`: 1M events, `HUGE`: 10M) are a population of the same kind generated
from counts (users, tenants, roles, assignments, events). Both years hold two quarterly access
reviews, recorded as campaigns whose populations come from the ledger's own permission state,
as the ledger re-derives them.

Both are clean by construction: every usage reported as allowed is allowed at that instant,
time-bound grants are revoked when they expire, leavers are cleaned up, every change has a
reason, every role has a holder, every team a member, and every active account uses its access
at least weekly. Then a handful of incidents is planted, each recorded in `Scenario.incidents`
with the audit that must find it and the ledger position of the event behind it, so that a test
can demand that the audits find exactly these. `Scenario.terminations` is the HR system's
list of leavers (`audit leavers --hr`).

Lines are canonical JSONL (DESIGN section 4) in time order, built as dicts and encoded with
orjson (no validation per event: the import validates), deterministic from the seed and the end.

The parts, by what they make: shape (sizes, incidents), catalogue (roles, families, names), world (the
generator's model), engine (the calendar and the emitting), people, grants, usage (connectors and secret
reads), reviews, and the two casts: cast (acme-ml) and population (from counts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from access_ledger.demo.engine import _Engine
from access_ledger.demo.shape import HUGE, INCIDENT_AUDITS, LARGE, SIZES, SMALL, Incident, Shape, is_generated

# What the demo, the tests and the benchmarks import from here.
__all__ = [
    "HUGE",
    "INCIDENT_AUDITS",
    "LARGE",
    "SIZES",
    "SMALL",
    "Incident",
    "Scenario",
    "Shape",
    "generate",
    "is_generated",
    "write_jsonl",
]


@dataclass
class Scenario:
    """One generated history. Iterate `lines()`; `incidents` and `moments` are complete after it."""

    shape: Shape
    end: datetime
    incidents: list[Incident] = field(default_factory=list)
    moments: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    principals: list[str] = field(default_factory=list)
    terminations: list[tuple[str, str]] = field(default_factory=list)  # (user:NAME, when HR ended the contract)

    def lines(self) -> Iterator[bytes]:
        """The events as canonical JSONL lines (bytes, no newline), oldest first."""
        engine = _Engine(self)
        return engine.run()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]

    def terminations_csv(self) -> str:
        """The HR system's leavers (`audit leavers --hr`): person,terminated_at, one line each."""
        return "person,terminated_at\n" + "".join(f"{p},{at}\n" for p, at in self.terminations)

    def incidents_by_kind(self) -> dict[str, list[Incident]]:
        out: dict[str, list[Incident]] = {}
        for i in self.incidents:
            out.setdefault(i.kind, []).append(i)
        return out


def generate(shape: Shape | str = SMALL, end: datetime | None = None, **overrides: Any) -> Scenario:
    """A scenario of `shape` (a Shape or 'small'/'large'/'huge') whose last event is before `end` (default now)."""
    if isinstance(shape, str):
        shape = SIZES[shape]
    if overrides:
        shape = replace(shape, **overrides)
    end = (end or datetime.now(UTC)).astimezone(UTC)
    return Scenario(shape, end)


def write_jsonl(path: str, shape: Shape | str = SMALL, end: datetime | None = None, **overrides: Any) -> Scenario:
    """Write the history to a JSONL file; return the scenario (with its incidents)."""
    scenario = generate(shape, end, **overrides)
    with open(path, "wb") as f:
        for line in scenario.lines():
            f.write(line + b"\n")
    return scenario
