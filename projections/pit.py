"""Point in time: the permission state at any position or instant, fast.

- The current state is a persisted projection: a snapshot with its tracked position, caught up
  from there on every use and saved again when it has moved on. An open ledger (a service worker)
  keeps it decoded in memory, keyed by the stored snapshot's bytes, the chain link at its position
  and the head's position and link (see `_Current`): each use reads that row and the head, and
  decodes nothing while they are unchanged.
- Past states start from the nearest checkpoint (a snapshot every CHECKPOINT_EVERY positions,
  written as folds pass them) and fold forward over change events only: usage events (most of a
  log) change no permission and are never read.
- A batch of questions is sorted by position and answered in one forward sweep.

Snapshots are derived data anyone who can write the database can edit (DESIGN section 5). They
are stored as plain JSON data, never code, bound to the chain link at their position and, with
ACCESS_LEDGER_SEAL_KEY set, carry an HMAC under that key. A snapshot that does not decode, is
bound to another log, lies beyond the head or fails its MAC is ignored and the state rebuilt
from the events; check_snapshots (for `verify`) compares every one with the fold of the events.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ledger.errors import ConcurrentWrite
from ledger.events import decode
from ledger.integrity import seal_key
from projections.permissions import BadSnapshot, PermissionState, Role, state_from_data, state_to_data

if TYPE_CHECKING:
    from ledger.app import AccessLedger

VERSION = "v1"
# Events that concern one principal (or its team membership): what a principal's subset may skip.
_ABOUT_SOMEONE = tuple(
    f'{{"type":"{t}"'.encode()
    for t in (
        "RoleAssigned",
        "RoleUnassigned",
        "TeamMemberAdded",
        "TeamMemberRemoved",
        "UserCreated",
        "UserDeactivated",
        "UserReactivated",
        "ServiceAccountCreated",
        "ServiceAccountDeactivated",
        "ServiceAccountReactivated",
    )
)
CURRENT = f"projection/{VERSION}/current"
CHECKPOINT = f"projection/{VERSION}/at/"
CHECKPOINT_EVERY = 50_000
SAVE_CURRENT_AFTER = 1_000
# A snapshot: this tag, a line with its MAC (hex; without a key, "sha256:" and the body's SHA-256), then the JSON body.
FORMAT = b"access-ledger permission-state 1"
_NO_MAC = b"-"  # (snapshots stored before the digest: read as before, stored again with one)
_DIGEST = b"sha256:"  # without a key, the MAC line is the body's SHA-256
#: The bytes of a snapshot's start a worker's cache compares (its format line and its MAC line).
HEADER = 128
_BODY_FIELDS = frozenset({"position", "link", "state"})

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


def _copy(s: PermissionState) -> PermissionState:
    """An independent copy: every container the fold changes in place is new.

    Sources are tuples and an Assignment is replaced, never changed, by the fold: both are shared.
    """
    return PermissionState(
        position=s.position,
        at=s.at,
        preset=s.preset,
        tenants=dict(s.tenants),
        principals=dict(s.principals),
        teams=dict(s.teams),
        members={t: dict(ms) for t, ms in s.members.items()},
        teams_of={m: set(ts) for m, ts in s.teams_of.items()},
        roles={
            n: Role(r.name, r.scope, r.base, dict(r.permissions), r.source, r.predefined) for n, r in s.roles.items()
        },
        assignments=dict(s.assignments),
        held_by={h: set(keys) for h, keys in s.held_by.items()},
        created=dict(s.created),
        status_source=dict(s.status_source),
    )


def _mac(key: bytes, position: int, body: bytes) -> bytes:
    return hmac.new(key, b"%d\n%s" % (position, body), hashlib.sha256).hexdigest().encode()


def _digest(body: bytes) -> bytes:
    return _DIGEST + hashlib.sha256(body).hexdigest().encode()


def _encode(state: PermissionState, link: str, key: bytes | None) -> bytes:
    """A snapshot of `state`, bound to the chain link at its position (and MACed under `key`)."""
    body = orjson.dumps({"position": state.position, "link": link, "state": state_to_data(state)})
    mac = _digest(body) if key is None else _mac(key, state.position, body)
    return b"%s\n%s\n%s" % (FORMAT, mac, body)


def _decode(data: bytes, position: int, link: str | None, key: bytes | None) -> PermissionState:
    """The state in a snapshot taken at `position` of the log whose link there is `link` (None: no
    such position). BadSnapshot for anything else: bytes of another format or version, a wrong or
    missing MAC, another position, another log."""
    tag, _, rest = data.partition(b"\n")
    mac, _, body = rest.partition(b"\n")
    if tag != FORMAT:
        raise BadSnapshot("not in this version's format")
    if key is not None and not hmac.compare_digest(mac, _mac(key, position, body)):
        raise BadSnapshot("its MAC is missing or wrong")
    if key is None and mac.startswith(_DIGEST) and not hmac.compare_digest(mac, _digest(body)):
        raise BadSnapshot("its body does not match its digest")
    if link is None:
        raise BadSnapshot("its position is beyond the head")
    try:
        d = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadSnapshot("its body is not JSON") from None
    if type(d) is not dict or d.keys() != _BODY_FIELDS:
        raise BadSnapshot("its body is not a snapshot")
    if type(d["position"]) is not int or d["position"] != position:
        raise BadSnapshot("it holds the state at another position")
    if d["link"] != link:
        raise BadSnapshot("it was taken from another log (the chain link at its position differs)")
    state = state_from_data(d["state"])
    if state.position != position:
        raise BadSnapshot("it holds the state at another position")
    return state


def _position_of(name: str, row_position: int) -> int:
    """The position a snapshot row is for: a checkpoint's name says it too, and they must agree."""
    if type(row_position) is not int:
        raise BadSnapshot("its position is not a number")
    if name != CURRENT and name != f"{CHECKPOINT}{row_position:012d}":
        raise BadSnapshot("its name and its position disagree")
    return row_position


def _link_at(led: AccessLedger, position: int) -> str | None:
    """The chain link at `position` (None beyond the head: no state there to trust)."""
    with led.store.transaction(write=False) as c:
        c.execute(
            "SELECT link FROM al_chain WHERE position = ? AND position <= (SELECT position FROM al_head WHERE id = 1)",
            (position,),
        )
        row = c.fetchone()
    # A link rewritten with another type matches nothing: no snapshot is trusted or saved there.
    return row[0] if row is not None and isinstance(row[0], str) else None


def _read(led: AccessLedger, name: str, row_position: int, data: bytes) -> PermissionState:
    """The state a stored snapshot row holds, checked (BadSnapshot if it cannot be used)."""
    position = _position_of(name, row_position)
    return _decode(data, position, _link_at(led, position), seal_key())


def _load(led: AccessLedger, name: str) -> tuple[int, PermissionState] | None:
    """The snapshot stored as `name` and its position; None when there is none that can be used."""
    loaded = led.snapshots.load(name)
    if loaded is None:
        return None
    try:
        with _quiet_gc():
            return loaded[0], _read(led, name, *loaded)
    except BadSnapshot:
        return None


def _save(led: AccessLedger, name: str, state: PermissionState) -> tuple[int, bytes, str] | None:
    """Store the state as `name`; the row as written (position, data, link), None if not written."""
    link = _link_at(led, state.position)
    if link is None:
        return None
    data = _encode(state, link, seal_key())
    try:
        led.snapshots.save(name, state.position, data)
    except ConcurrentWrite:
        # A cache stored on the read path: a write under way elsewhere holds the ledger, and a question must not
        # wait for it or fail because of it. The state is stored by a later use.
        return None
    return (state.position, data, link) if not led.store.read_only_path else None


class _Current:
    """A worker's decoded current state, and what proves it is still what `Timeline.current` would build.

    `probe` is the stored current snapshot as it was read, without its body: (position, the data's length,
    its first HEADER bytes, the chain link al_chain held at its position), with the seal key in force;
    `state` is that snapshot decoded and folded to `state.position`, whose chain link was `link`. It answers
    only while the stored row's probe and the key are the same and the log's head is that position with that
    link (or, folded forward, still has that link there): another key, a swapped file or a write by anyone
    makes it miss, and so does any edit of the row's position, length or header, and the state is built as
    without a cache (and checked as then). An edit of the body alone needs no look: the header holds the
    body's MAC (with the key) or its SHA-256 (without), so a worker without the cache refuses that body and
    rebuilds from the events what the cache holds (the body of a snapshot stored by a key holder, or, without
    the key, one that matched its digest). Only a row whose header binds its body so is kept (`_binds`).
    The body is never read while the cache answers: a large state's snapshot is tens of megabytes.
    """

    __slots__ = ("probe", "key", "state", "link")

    def __init__(self, probe: tuple[Any, Any, bytes | None, Any], key: bytes | None, state: PermissionState, link: str):
        self.probe, self.key, self.state, self.link = probe, key, state, link


def _probe(row: tuple[Any, bytes, Any]) -> tuple[Any, Any, bytes | None, Any]:
    """A snapshot row (position, data, link) as `Snapshots.probe_bound` reads it from the database."""
    return (row[0], len(row[1]), row[1][:HEADER], row[2])


def _mac_line(data: bytes) -> bytes | None:
    """The MAC line of a snapshot in this version's format, read from its header (None: not that format)."""
    tag, newline, rest = data[:HEADER].partition(b"\n")
    mac, newline2, _ = rest.partition(b"\n")
    return mac if newline and newline2 and tag == FORMAT else None


def _binds(data: bytes, key: bytes | None) -> bool:
    """Whether a snapshot's header (read and checked by `_decode` under `key`) binds its body: with the key,
    its MAC; without, its SHA-256. (Read without the key, a MAC binds nothing this reader can check.)"""
    mac = _mac_line(data)
    if mac is None:
        return False
    return mac.startswith(_DIGEST) if key is None else not (mac == _NO_MAC or mac.startswith(_DIGEST))


# One entry per open ledger (a service worker keeps its ledger open): gone with the ledger object.
_CURRENT: weakref.WeakKeyDictionary[AccessLedger, _Current] = weakref.WeakKeyDictionary()


class Timeline:
    """Permission states of one ledger at any position."""

    def __init__(self, led: AccessLedger, *, persist: bool = True):
        self.led = led
        self.persist = persist
        self._checkpoints: dict[int, PermissionState] = {}
        self._saved: set[int] | None = None

    # -- folding -------------------------------------------------------------------------

    def _fold(self, state: PermissionState, stop: int, stop_at: str | None = None) -> PermissionState:
        """Fold change events after state.position up to stop; save checkpoints passed on the way.
        `stop_at`: the time of the event at stop, when the caller has read it already (the head's)."""
        with _quiet_gc():
            return self._fold_events(state, stop, stop_at)

    def _fold_events(self, state: PermissionState, stop: int, stop_at: str | None = None) -> PermissionState:
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
        state.at = stop_at or self.led.time_of(stop) or state.at
        return state

    def _persisted(self) -> set[int]:
        """Positions of the stored checkpoints (rows whose name and position disagree are never read)."""
        if self._saved is None:
            self._saved = (
                {
                    mark
                    for name, mark in self.led.snapshots.names(CHECKPOINT)
                    if type(mark) is int and name == f"{CHECKPOINT}{mark:012d}"
                }
                if self.persist
                else set()
            )
        return self._saved

    def _checkpoint(self, state: PermissionState, mark: int) -> None:
        """Record the state as it stands at `mark` (all changes at or before it are folded)."""
        if mark in self._checkpoints or mark in self._persisted():
            return
        at = self.led.time_of(mark)
        if at is None:  # a gap: name it now rather than walk every mark of the empty positions after it
            with self.led.store.transaction(write=False) as c:
                raise self.led.store.gap(c, mark)
        snap = _copy(state)
        snap.position = mark
        snap.at = at
        self._checkpoints[mark] = _keep(snap)
        if self.persist:
            _save(self.led, f"{CHECKPOINT}{mark:012d}", snap)
            self._persisted().add(mark)

    def _nearest(self, position: int) -> int:
        """The newest checkpoint at or before `position`, loaded into memory (0: none).

        A stored checkpoint that cannot be used is forgotten, so the next fold past it saves it again.
        """
        best = max((m for m in self._checkpoints if m <= position), default=0)
        for mark in sorted((m for m in self._persisted() if best < m <= position), reverse=True):
            loaded = _load(self.led, f"{CHECKPOINT}{mark:012d}")
            if loaded is not None:
                self._checkpoints[mark] = _keep(loaded[1])
                return mark
            self._persisted().discard(mark)
        return best

    def _start_for(self, position: int) -> PermissionState:
        """A copy of the latest known state at or before `position`."""
        best = self._nearest(position)
        return _copy(self._checkpoints[best]) if best else PermissionState()

    # -- states --------------------------------------------------------------------------

    def current(self) -> PermissionState:
        """The state at the head, from the persisted projection caught up to the head.

        The state returned may be the worker's cached one (see `_Current`), shared by every caller until
        the head moves: callers only read it."""
        if not self.persist:  # (a log that is not a ledger: the export's verified walk)
            head = self.led.head()
            return self._fold(self._start_for(head), head)
        head, head_at, head_link = self.led.store.head()
        key = seal_key()
        cached = _CURRENT.pop(self.led, None)  # put back only once it is whole again
        if cached is not None and cached.key == key and self.led.snapshots.probe_bound(CURRENT, HEADER) == cached.probe:
            state = cached.state
            if state.position == head and cached.link == head_link:
                _CURRENT[self.led] = cached
                return state
            if state.position < head and _link_at(self.led, state.position) == cached.link:
                # On a copy: a state once returned never changes under whoever holds it.
                state = self._fold(_copy(state), head, head_at or None)
                probe: tuple[Any, Any, bytes | None, Any] | None = cached.probe
                if head - cached.probe[0] >= SAVE_CURRENT_AFTER:
                    saved = _save(self.led, CURRENT, state)
                    probe = None if saved is None else _probe(saved)
                if probe is not None:
                    _CURRENT[self.led] = _Current(probe, key, state, head_link)
                return state
        row = self.led.snapshots.load_bound(CURRENT)
        state: PermissionState | None = None
        saved_at = 0
        if row is not None and type(row[0]) is int and row[0] <= head:  # (not one a writer saved since `head`)
            try:
                with _quiet_gc():
                    state = _decode(
                        row[1], _position_of(CURRENT, row[0]), row[2] if isinstance(row[2], str) else None, key
                    )
                saved_at = row[0]
            except BadSnapshot:
                row = None
        else:
            row = None
        if state is None:
            state = self._start_for(head)
        state = self._fold(state, head, head_at or None)
        legacy = row is not None and key is None and _mac_line(row[1]) == _NO_MAC
        if head - saved_at >= SAVE_CURRENT_AFTER or (saved_at == 0 and head) or legacy:
            row = _save(self.led, CURRENT, state)  # (one stored before the digest is stored again with it)
        if row is not None and head and _binds(row[1], key):
            _CURRENT[self.led] = _Current(_probe(row), key, state, head_link)
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

    def sweep(
        self, items: Iterable[T], position_of: Callable[[T], int], answer: Callable[[PermissionState, T], Any]
    ) -> list[Any]:
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


def check_snapshots(led: AccessLedger) -> list[str]:
    """One line per stored snapshot that disagrees with the events or cannot be used (empty: all agree).

    The change events are folded once from the start; every snapshot (checkpoints and the current
    projection) is compared with the fold at its position. One that cannot be used is ignored
    where it is used already. One that decodes but disagrees (edited by someone without the seal
    key while none is set) would be trusted on use: deleting it (led.snapshots.delete) is always
    safe, the state is rebuilt from the events.
    """
    problems: list[str] = []
    rows: list[tuple[int, str]] = []
    for name, row_position in led.snapshots.names():
        if name != CURRENT and not name.startswith(CHECKPOINT):
            problems.append(f"snapshot {name} (position {row_position!r:.40}) is not one this version uses: never read")
        elif type(row_position) is not int:
            problems.append(f"snapshot {name} holds the position {row_position!r:.40}, not a number: never read")
        else:
            rows.append((row_position, name))
    state, folded = PermissionState(), 0
    with _quiet_gc():
        for row_position, name in sorted(rows):
            loaded = led.snapshots.load(name)
            if loaded is None:  # deleted meanwhile
                continue
            try:
                snapshot = _read(led, name, *loaded)
            except BadSnapshot as exc:
                problems.append(
                    f"snapshot {name} (position {row_position}) cannot be used ({exc}): rebuilt on next use"
                )
                continue
            if row_position > folded:
                state.fold(led.read_changes(folded + 1, row_position))
                folded = row_position
            state.position, state.at = row_position, led.time_of(row_position) or state.at
            if snapshot != state:
                problems.append(
                    f"snapshot {name} (position {row_position}) does not match the events: answers "
                    "that start from it are wrong until it is deleted (it is rebuilt on next use)"
                )
    return problems
