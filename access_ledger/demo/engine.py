"""The engine that runs the year day by day, emitting each event; the verbs it offers the casts come from
the modules of what they make (people, grants, usage, reviews)."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from access_ledger.demo.cast import _AcmeCast
from access_ledger.demo.grants import _Grants
from access_ledger.demo.people import _People
from access_ledger.demo.population import _Population
from access_ledger.demo.reviews import _Reviews
from access_ledger.demo.shape import CHANGES_FROM, CHANGES_TO, DAY, INCIDENT_AUDITS, Incident
from access_ledger.demo.usage import _Usage
from access_ledger.demo.world import Key, _clock, _epoch, _World
from projections.permissions import PermissionState
from projections.reviews import Campaign

if TYPE_CHECKING:
    from access_ledger.demo.generator import Scenario


Action = Callable[["_Engine"], None]


class _Engine(_People, _Grants, _Usage, _Reviews):
    """Runs the year day by day: night usage, then the day's changes (08:00-10:00), then day usage."""

    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.shape = scenario.shape
        self.rng = random.Random(self.shape.seed)
        self.w = _World()
        scenario.incidents.clear()
        scenario.moments.clear()
        scenario.counts.clear()
        scenario.terminations.clear()
        last_day = int(datetime(scenario.end.year, scenario.end.month, scenario.end.day, tzinfo=UTC).timestamp())
        if scenario.end.timestamp() - last_day < CHANGES_FROM:  # keep every event before `end`
            last_day -= DAY
        self.first_day = last_day - self.shape.days * DAY
        self.day = 0
        self.day_start = self.first_day
        self.n = 0  # events emitted = ledger position of the last one
        self.todo: dict[int, list[Action]] = {}
        self.changes: list[dict[str, Any]] = []
        self.pending_incidents: dict[str, Incident] = {}
        self.quiet: set[str] = set()  # principals that stop using anything (the dormant)
        self.people: list[str] = []
        self.services: list[str] = []
        self.rota: deque[str] = deque()
        self.jobs: dict[str, list[tuple[str, str]]] = {}  # service account -> (tenant, connector) it runs in
        self.ids: dict[str, list[str]] = {}
        self.counter = 0
        self.change_pos: dict[str, tuple[int, str]] = {}  # change event id -> (position, at)
        self.grant_events: dict[Key, dict[str, Any]] = {}
        self.admin = "user:priya"
        self.usage_per_day = 0.0
        self.extra_usage: list[tuple[int, dict[str, Any]]] = []
        self._active: list[str] | None = None
        # The ledger's own permission state, kept only when the history has review campaigns (their
        # populations are derived from it exactly as the ledger re-derives them).
        self.mirror: PermissionState | None = None
        self.reviews: dict[str, tuple[Campaign, list[dict[str, Any]]]] = {}
        self.revoked: dict[Key, int] = {}  # key -> day a review's revocation removed it (not re-granted soon)
        self.revoking: set[Key] = set()  # direct grants a review decided to revoke, not removed since

    def on(self, day: int, action: Action) -> None:
        self.todo.setdefault(day, []).append(action)

    def now(self) -> int:
        return self.day_start + CHANGES_FROM

    def instant(self, day: int, sec: int = CHANGES_FROM) -> str:
        return _epoch(self.first_day + day * DAY, sec)

    def run(self) -> Iterator[bytes]:
        cast = _AcmeCast(self) if self.shape.cast else _Population(self)
        cast.setup()
        usage_target = max(0, self.shape.events - cast.expected_changes())
        # 1970-01-01 was a Thursday: epoch days 2 and 3 (mod 7) are the weekend, when less happens.
        weights = [1.0 if (self.first_day // DAY + d) % 7 not in (2, 3) else 0.35 for d in range(self.shape.days)]
        scale = usage_target / max(1.0, sum(weights))
        self.sc.moments["start"] = _epoch(self.first_day, 0)
        for d in range(self.shape.days):
            self.day, self.day_start = d, self.first_day + d * DAY
            self.usage_per_day = scale * weights[d]
            yield from self._flush_usage(self._usage(0, CHANGES_FROM, 0.2, services_only=True))
            for action in self.todo.pop(d, ()):
                action(self)
            cast.daily()
            yield from self._flush_changes()
            yield from self._flush_usage(self._usage(CHANGES_TO, DAY, 0.8))
        self.sc.moments["end"] = self.last_at

    last_at = ""

    def _next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:07d}"

    def change(self, type_: str, actor: str, reason: str | None, **fields: Any) -> dict[str, Any]:
        """Queue a change event for today's change window (its time is set when the window closes)."""
        ev: dict[str, Any] = {"type": type_, "at": None, "actor": actor}
        ev.update((k, v) for k, v in fields.items() if v is not None)
        if reason:
            ev["reason"] = reason
        ev["id"] = self._next_id("chg")  # changes always carry one: incidents name their events by it
        self.changes.append(ev)
        return ev

    def _flush_changes(self) -> Iterator[bytes]:
        if not self.changes:
            return
        secs = sorted(self.rng.randrange(CHANGES_FROM, CHANGES_TO) for _ in self.changes)
        for ev, sec in zip(self.changes, secs):
            ev["at"] = _epoch(self.day_start, sec)
            if ev["type"] == "ReviewStarted":
                self._fix_population(ev)
            yield self._emit(ev)
            self.change_pos[ev["id"]] = (self.n, ev["at"])
            if self.mirror is not None:
                self.mirror.apply(self.n, ev)
        self.changes = []

    def _emit(self, ev: dict[str, Any]) -> bytes:
        self.n += 1
        self.last_at = ev["at"]
        self.sc.counts[ev["type"]] += 1
        if self.pending_incidents:
            inc = self.pending_incidents.pop(ev.get("id") or "", None)
            if inc is not None:
                inc.position, inc.at = self.n, ev["at"]
        return orjson.dumps(ev)

    def _flush_usage(self, block: list[tuple[int, dict[str, Any]]]) -> Iterator[bytes]:
        if self.extra_usage:
            block.extend(self.extra_usage)
            self.extra_usage = []
        block.sort(key=lambda x: x[0])
        day, clock = _epoch(self.day_start, 0)[:11], _clock()
        for sec, ev in block:
            ev["at"] = day + clock[sec]
            yield self._emit(ev)

    # -- incidents ------------------------------------------------------------------------------

    def incident(
        self,
        kind: str,
        ev: dict[str, Any] | None,
        principal: str,
        tenant: str | None,
        detail: str,
        role: str | None = None,
    ) -> Incident:
        inc = Incident(kind, INCIDENT_AUDITS[kind], principal, tenant, detail, role=role)
        if ev is not None:
            inc.event_id = ev["id"]
            if ev["id"] in self.change_pos:  # already recorded
                inc.position, inc.at = self.change_pos[ev["id"]]
            else:
                self.pending_incidents[ev["id"]] = inc
        self.sc.incidents.append(inc)
        return inc
