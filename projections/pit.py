"""Point in time: the permission state at any position or instant, fast.

- The current state is a persisted projection: a snapshot with its tracked position, caught up
  from there on every use and saved again when it has moved on.
- Past states start from the nearest checkpoint (a snapshot every CHECKPOINT_EVERY positions,
  written as folds pass them) and fold forward over change events only: usage events (most of a
  log) change no permission and are never read.
- A batch of questions is sorted by position and answered in one forward sweep.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from projections.permissions import PermissionState

if TYPE_CHECKING:
    from ledger.app import AccessLedger

VERSION = "v1"
CURRENT = f"projection/{VERSION}/current"
CHECKPOINT = f"projection/{VERSION}/at/"
CHECKPOINT_EVERY = 50_000
SAVE_CURRENT_AFTER = 1_000

T = TypeVar("T")


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

    # -- folding -------------------------------------------------------------------------

    def _fold(self, state: PermissionState, stop: int) -> PermissionState:
        """Fold change events after state.position up to stop; save checkpoints passed on the way."""
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

    def _checkpoint(self, state: PermissionState, mark: int) -> None:
        """Record the state as it stands at `mark` (all changes at or before it are folded)."""
        if mark in self._checkpoints:
            return
        snap = _copy(state)
        snap.position = mark
        snap.at = self.led.time_of(mark) or snap.at
        self._checkpoints[mark] = snap
        if self.persist:
            self.led.snapshots.save(f"{CHECKPOINT}{mark:012d}", mark, _dump(snap))

    def _nearest(self, position: int) -> int:
        """The newest checkpoint at or before `position`, loaded into memory (0: none)."""
        best = max((m for m in self._checkpoints if m <= position), default=0)
        if self.persist:
            for name, mark in reversed(self.led.snapshots.names(CHECKPOINT)):
                if best < mark <= position:
                    loaded = self.led.snapshots.load(name)
                    state = _load(loaded[1]) if loaded else None
                    if state is not None:
                        self._checkpoints[mark] = state
                        best = mark
                    break
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
        events = list(self.led.read_changes(best + 1, position)) if position > best else []
        joined = {ev["team"] for _, ev in events if ev["type"] == "TeamMemberAdded" and ev["member"] == principal}
        state = base.subset_for(principal, joined)
        for pos, ev in events:
            state.apply(pos, ev)
        state.position = position
        state.at = self.led.time_of(position) or state.at
        return state

    def at_time(self, instant: str) -> PermissionState:
        """The state at an instant: every event with at <= instant folded."""
        return self.at_position(self.led.position_at(instant))

    # -- batches -------------------------------------------------------------------------

    def sweep(self, items: Iterable[T], position_of: Callable[[T], int],
              answer: Callable[[PermissionState, T], Any]) -> list[Any]:
        """Answer items in one forward fold: sorted by position, results back in the given order."""
        indexed = list(enumerate(items))
        indexed.sort(key=lambda pair: position_of(pair[1]))
        results: list[Any] = [None] * len(indexed)
        state: PermissionState | None = None
        for i, item in indexed:
            target = position_of(item)
            if state is None or target < state.position:
                state = self._start_for(target)
            elif target - state.position > CHECKPOINT_EVERY:
                candidate = max((m for m in self._checkpoints if state.position < m <= target), default=None)
                if candidate is not None:
                    state = _copy(self._checkpoints[candidate])
            state = self._fold(state, target)
            results[i] = answer(state, item)
        return results


def states(led: AccessLedger) -> Iterator[tuple[int, PermissionState]]:
    """Every state of the log in order (for tests and small ledgers): (position, state after it)."""
    state = PermissionState()
    for position, ev in led.read():
        state.apply(position, ev)
        yield position, state
