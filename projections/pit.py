"""Point in time: the permission state at any position or instant, fast.

- The current state is a persisted projection: a snapshot with its tracked position, caught up
  from there on every use and saved again when it has moved on.
- Past states start from the nearest checkpoint (a snapshot every CHECKPOINT_EVERY positions,
  written as folds pass them) and fold forward over change events only: usage events (most of a
  log) change no permission and are never read.
- A batch of questions is sorted by position and answered in one forward sweep.
"""

from __future__ import annotations

import gc
import pickle
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ledger.events import decode
from projections.permissions import PermissionState

if TYPE_CHECKING:
    from ledger.app import AccessLedger

VERSION = "v1"
# Events that concern one principal (or its team membership): what a principal's subset may skip.
_ABOUT_SOMEONE = tuple(f'{{"type":"{t}"'.encode() for t in (
    "RoleAssigned", "RoleUnassigned", "TeamMemberAdded", "TeamMemberRemoved", "UserCreated", "UserDeactivated",
    "UserReactivated", "ServiceAccountCreated", "ServiceAccountDeactivated", "ServiceAccountReactivated"))
CURRENT = f"projection/{VERSION}/current"
CHECKPOINT = f"projection/{VERSION}/at/"
CHECKPOINT_EVERY = 50_000
SAVE_CURRENT_AFTER = 1_000

T = TypeVar("T")


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Folding allocates many small objects and no cycles; with large states in memory the cyclic
    collector would rescan them all again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _keep(state: PermissionState) -> PermissionState:
    """Move a long-lived state (a checkpoint) out of the collector's sight."""
    gc.freeze()
    return state


def _dump(state: PermissionState) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _copy(state: PermissionState) -> PermissionState:
    """An independent copy (a pickle round trip is several times faster than deepcopy here)."""
    return pickle.loads(_dump(state))  # noqa: S301


def _load(data: bytes) -> PermissionState | None:
    try:
        state = pickle.loads(data)  # noqa: S301 - our own snapshot, in our own database
    except Exception:  # a snapshot from another version: rebuild instead
        return None
    return state if isinstance(state, PermissionState) else None


class Timeline:
    """Permission states of one ledger at any position."""

    def __init__(self, led: AccessLedger, *, persist: bool = True):
        self.led = led
        self.persist = persist
        self._checkpoints: dict[int, PermissionState] = {}
        self._saved: set[int] | None = None

    # -- folding -------------------------------------------------------------------------

    def _fold(self, state: PermissionState, stop: int) -> PermissionState:
        """Fold change events after state.position up to stop; save checkpoints passed on the way."""
        with _quiet_gc():
            return self._fold_events(state, stop)

    def _fold_events(self, state: PermissionState, stop: int) -> PermissionState:
        start = state.position + 1
        if stop < start:
            return state
        next_mark = (state.position // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY
        for position, ev in self.led.read_changes(start, stop):
            while position > next_mark:
                self._checkpoint(state, next_mark)
                next_mark += CHECKPOINT_EVERY
            state.apply(position, ev)
        while stop >= next_mark:
            self._checkpoint(state, next_mark)
            next_mark += CHECKPOINT_EVERY
        state.position = stop
        state.at = self.led.time_of(stop) or state.at
        return state

    def _persisted(self) -> set[int]:
        if self._saved is None:
            self._saved = {mark for _, mark in self.led.snapshots.names(CHECKPOINT)} if self.persist else set()
        return self._saved

    def _checkpoint(self, state: PermissionState, mark: int) -> None:
        """Record the state as it stands at `mark` (all changes at or before it are folded)."""
        if mark in self._checkpoints or mark in self._persisted():
            return
        snap = _copy(state)
        snap.position = mark
        snap.at = self.led.time_of(mark) or snap.at
        self._checkpoints[mark] = _keep(snap)
        if self.persist:
            self.led.snapshots.save(f"{CHECKPOINT}{mark:012d}", mark, _dump(snap))
            self._persisted().add(mark)

    def _nearest(self, position: int) -> int:
        """The newest checkpoint at or before `position`, loaded into memory (0: none)."""
        best = max((m for m in self._checkpoints if m <= position), default=0)
        candidates = [m for m in self._persisted() if best < m <= position]
        if candidates:
            mark = max(candidates)
            loaded = self.led.snapshots.load(f"{CHECKPOINT}{mark:012d}")
            state = _load(loaded[1]) if loaded else None
            if state is not None:
                self._checkpoints[mark] = _keep(state)
                best = mark
        return best

    def _start_for(self, position: int) -> PermissionState:
        """A copy of the latest known state at or before `position`."""
        best = self._nearest(position)
        return _copy(self._checkpoints[best]) if best else PermissionState()

    # -- states --------------------------------------------------------------------------

    def current(self) -> PermissionState:
        """The state at the head, from the persisted projection caught up to the head."""
        head = self.led.head()
        state: PermissionState | None = None
        saved_at = 0
        if self.persist:
            loaded = self.led.snapshots.load(CURRENT)
            if loaded is not None and loaded[0] <= head:
                state = _load(loaded[1])
                saved_at = loaded[0] if state is not None else 0
        if state is None:
            state = self._start_for(head)
        state = self._fold(state, head)
        if self.persist and head - saved_at >= SAVE_CURRENT_AFTER or (self.persist and saved_at == 0 and head):
            self.led.snapshots.save(CURRENT, head, _dump(state))
        return state

    def at_position(self, position: int) -> PermissionState:
        """The state after the event at `position` (0: before the first event)."""
        head = self.led.head()
        position = max(0, min(position, head))
        if position == head:
            return self.current()
        return self._fold(self._start_for(position), position)

    def for_principal(self, principal: str, position: int) -> PermissionState:
        """A state that answers every question about `principal` at `position` (see subset_for).

        Much cheaper than at_position on a large ledger: nothing but the principal's part of the
        nearest checkpoint is copied before folding forward.
        """
        head = self.led.head()
        position = max(0, min(position, head))
        best = self._nearest(position)
        base = self._checkpoints.get(best) if best else None
        if base is None:
            return self._fold(PermissionState(), position)
        with _quiet_gc():
            raw = list(self.led.read_changes_raw(best + 1, position)) if position > best else []
            me = orjson.dumps(principal)
            joined: set[str] = set()
            for _, data in raw:
                if data.startswith(b'{"type":"TeamMemberAdded"') and me in data:
                    ev = decode(data)
                    if ev["member"] == principal:
                        joined.add(ev["team"])
            state = base.subset_for(principal, joined)
            # Events about other principals cannot change answers about this one: skip them undecoded.
            kind, name = principal.split(":", 1)
            tokens = [me, orjson.dumps({kind: name})[1:-1]]
            for team in state.members:
                tokens += [orjson.dumps(f"team:{team}"), b'"team":' + orjson.dumps(team)]
            for pos, data in raw:
                if data.startswith(_ABOUT_SOMEONE) and not any(token in data for token in tokens):
                    continue
                state.apply(pos, decode(data))
        state.position = position
        state.at = self.led.time_of(position) or state.at
        return state

    def at_time(self, instant: str) -> PermissionState:
        """The state at an instant: every event with at <= instant folded."""
        return self.at_position(self.led.position_at(instant))

    # -- batches -------------------------------------------------------------------------

    def sweep(self, items: Iterable[T], position_of: Callable[[T], int],
              answer: Callable[[PermissionState, T], Any]) -> list[Any]:
        """Answer items in one forward pass over the log: sorted by position, results in the given order.

        One read of the change events from the nearest checkpoint to the last position asked
        about; each item is answered when the fold reaches its position.
        """
        indexed = sorted(enumerate(items), key=lambda pair: position_of(pair[1]))
        results: list[Any] = [None] * len(indexed)
        if not indexed:
            return results
        head = self.led.head()
        first = max(0, min(position_of(indexed[0][1]), head))
        last = max(0, min(position_of(indexed[-1][1]), head))
        state = self._start_for(first)
        events = self.led.read_changes(state.position + 1, last) if last > state.position else iter(())
        pending: tuple[int, dict[str, Any]] | None = next(events, None)
        with _quiet_gc():
            for i, item in indexed:
                target = max(0, min(position_of(item), head))
                while pending is not None and pending[0] <= target:
                    state.apply(*pending)
                    pending = next(events, None)
                state.position = target
                results[i] = answer(state, item)
        return results


def states(led: AccessLedger) -> Iterator[tuple[int, PermissionState]]:
    """Every state of the log in order (for tests and small ledgers): (position, state after it)."""
    state = PermissionState()
    for position, ev in led.read():
        state.apply(position, ev)
        yield position, state
