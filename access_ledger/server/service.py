"""What a running service holds: the open ledger, the lock that serialises its use, and the token follower.

Tokens are looked up in `TokenFollower`'s state, folded from the stored events with the hash chain
recomputed over each of them (see projections.tokens): no side table decides who may call the service,
so a token written into the database by hand is refused (the chain breaks: 503 until `verify` has been
run and the log repaired), and an edit of a token row in al_entities changes nothing here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.app import AccessLedger, WriteResult
from ledger.errors import ConcurrentWrite, IntegrityFailure, LedgerError, StorageError
from projections.tokens import Token, TokenFollower, authenticate, require_scope

WAIT_FOR_POSITION = 5.0  # seconds a read with min_position waits for the log to reach it


class NotCaughtUp(Exception):
    """The log has not reached a read's min_position within the wait (409)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """The head (position, time, link) a request's token check caught up to, and the open ledger it read."""

    led: AccessLedger
    head: tuple[int, str, str]


@dataclass(slots=True, eq=False)
class _Waiting:
    """A request's events waiting for the ledger, and what became of them (a WriteResult or the refusal)."""

    events: list[tuple[int, dict[str, Any]]]
    enforce: bool
    outcome: WriteResult | BaseException | None = None


class Service:
    """One ledger, opened on first use and reopened after a failure, used by one request at a time."""

    def __init__(self, url: str):
        self.url = url
        self._led: AccessLedger | None = None
        self._follower: TokenFollower | None = None
        self._lock = threading.RLock()  # re-entered by the calls made inside `reading`
        self._depth = 0
        self._queue_lock = threading.Lock()
        self._follow_lock = threading.Lock()  # the token follower's, apart from the ledger's (PostgreSQL)
        self._tickets = itertools.count(1)  # orders arrivals and catch-ups
        # The follower last caught up and the ticket its catch-up began at: requests that came before are served.
        self._caught: tuple[TokenFollower | None, int] = (None, 0)
        self._waiting: list[_Waiting] = []

    @contextmanager
    def ledger(self, seen: Seen | None = None) -> Iterator[AccessLedger]:
        """The open ledger, for the duration of one call (requests take turns). With `seen` (what this
        request's token check read), a read is answered at the head checked then, not at a second read."""
        with self._lock, self._opened(seen) as led:
            yield led

    @contextmanager
    def _opened(self, seen: Seen | None = None) -> Iterator[AccessLedger]:
        """`ledger`, with the lock already held."""
        if self._led is None:
            self._led = AccessLedger.open(self.url)
            self._follower = TokenFollower(self._led.store)
        outermost = self._depth == 0
        self._depth += 1
        try:
            if seen is not None and seen.led is self._led:
                with self._led.store.pinned(seen.head):
                    yield self._led
            else:
                yield self._led
        except Exception as exc:
            if outermost and (not isinstance(exc, LedgerError) or isinstance(exc, (StorageError, IntegrityFailure))):
                # A dropped connection, or a log that failed a check: the next request starts afresh
                # (closed by the outermost call, once the transaction of `reading` has ended).
                self._close()
            raise
        finally:
            self._depth -= 1

    @contextmanager
    def reading(self) -> Iterator[AccessLedger]:
        """The ledger for one request that only reads: its token check, head and answer in one read transaction
        (one snapshot of the database), the calls made inside taking the ledger again as usual."""
        with self.ledger() as led, led.store.reading():
            yield led

    def write(self, events: list[tuple[int, dict[str, Any]]], *, enforce_authority: bool = False) -> WriteResult:
        """Write one request's parsed events (line number, canonical event), all or none, together with the
        other requests waiting for the ledger meanwhile: one transaction and one head extension for the group
        (ledger.group), each request answered as if written alone right after those before it."""
        mine = _Waiting(events, enforce_authority)
        with self._queue_lock:
            self._waiting.append(mine)
        try:
            with self._lock:
                # Answered already by a leader that took it while this thread waited; if not, this request
                # leads the group waiting now (the ledger is opened only then: an answered request is never
                # given another answer by a failure to reopen it).
                if mine.outcome is None:
                    with self._opened() as led:
                        with self._queue_lock:
                            group, self._waiting = self._waiting, []
                        try:
                            self._write_group(led, group)
                        except BaseException as exc:
                            for waiting in group:  # their threads are told, not left to lead a group of none
                                if waiting.outcome is None:
                                    waiting.outcome = exc
                            raise
        except BaseException:
            # The ledger could not be opened (or the group failed): a request answered with an error is never
            # written later by another request's leader.
            with self._queue_lock:
                self._waiting = [w for w in self._waiting if w is not mine]
            raise
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        assert mine.outcome is not None
        return mine.outcome

    def _write_group(self, led: AccessLedger, group: list[_Waiting]) -> None:
        """Write the waiting requests, in runs of small ones grouped; a big one alone (the import path)."""
        from ledger.group import GROUP_EVENTS, Committed, write_group

        run: list[_Waiting] = []
        size = 0
        broken: BaseException | None = None
        for item in [*group, None]:
            if item is not None and len(item.events) <= GROUP_EVENTS and size + len(item.events) <= GROUP_EVENTS:
                run.append(item)
                size += len(item.events)
                continue
            if run and broken is None:
                try:
                    committed = Committed()
                    for waiting, got in zip(run, write_group(led, [(w.events, w.enforce) for w in run], committed)):
                        waiting.outcome = got
                    run = []
                    self._folded(committed)
                except ConcurrentWrite as exc:
                    # Another process held the ledger past the wait: no request of the group caused it, and
                    # writing them one at a time would wait that long once each. Each client retries (503).
                    broken = exc
                except LedgerError:
                    pass  # a database error for the group: its requests are written one at a time below
            for waiting in run:
                broken = self._write_alone(led, waiting, broken)
            run, size = [], 0
            if item is not None:
                if len(item.events) > GROUP_EVENTS:
                    broken = self._write_alone(led, item, broken)
                else:
                    run, size = [item], len(item.events)
        if broken is not None:
            self._close()  # the next request opens the ledger afresh

    def _folded(self, committed: Any) -> None:
        """Hand the token follower what this worker's group just committed (it need not read and hash it again)."""
        if self._follower is not None and committed.events:
            with self._follow_lock:
                self._follower.extend(committed.start, committed.events, committed.end)

    @staticmethod
    def _write_alone(led: AccessLedger, waiting: _Waiting, broken: BaseException | None) -> BaseException | None:
        if broken is not None:
            waiting.outcome = broken
            return broken
        try:
            waiting.outcome = led._write([waiting.events], enforce_authority=waiting.enforce)
        except LedgerError as exc:
            waiting.outcome = exc
            if isinstance(exc, (StorageError, IntegrityFailure)):
                return exc
        return None

    def authenticate(self, presented: str | None, scopes: tuple[str, ...], instant: str) -> Token:
        """The token presented, if the ledger's current token state lets it use one of `scopes` (TokenRefused if not)."""
        return self.authenticated(presented, scopes, instant)[0]

    def authenticated(self, presented: str | None, scopes: tuple[str, ...], instant: str) -> tuple[Token, Seen]:
        """`authenticate`, and the head the token state was caught up to (checked against the log on the way).

        On PostgreSQL the token state is caught up beside a write (its own pooled connection, its own lock), and
        one catch-up that began after this request arrived serves it: what it read was committed no earlier than
        the request came, so a token revoked before then is refused all the same."""
        led, follower = self._led, self._follower
        if led is None or follower is None or not led.store.postgres or led.store.in_reading():
            with self.ledger() as led:
                assert self._follower is not None
                with self._follow_lock:
                    token, seen = self._checked(self._follower, led, presented, instant)
                if token.used_at is None:
                    self._record_use(led, token)
                    if not led.store.in_reading():
                        # The use is an event: the head moved on, maybe past a revocation another writer made
                        # since the check above, so the token is judged again at the head the answer is pinned
                        # to. Inside `reading` the answer stays at the snapshot's head, the one it was checked at.
                        with self._follow_lock:
                            token, seen = self._checked(self._follower, led, presented, instant)
            require_scope(token, scopes)
            return token, seen
        ticket = next(self._tickets)
        try:
            with self._follow_lock:
                if self._caught[0] is not follower or self._caught[1] <= ticket:
                    begun = next(self._tickets)
                    follower.catch_up()
                    self._caught = (follower, begun)
                token, seen = self._checked(follower, led, presented, instant, caught=True)
        except Exception as exc:
            if not isinstance(exc, LedgerError) or isinstance(exc, (StorageError, IntegrityFailure)):
                with self._lock:
                    if self._led is led:
                        self._close()  # a dropped connection, or a log that failed a check: start afresh
            raise
        if token.used_at is None:
            with self.ledger() as led:
                self._record_use(led, token)
                assert self._follower is not None
                with self._follow_lock:  # judged again at the new head (see above)
                    token, seen = self._checked(self._follower, led, presented, instant)
        require_scope(token, scopes)
        return token, seen

    @staticmethod
    def _checked(
        follower: TokenFollower, led: AccessLedger, presented: str | None, instant: str, *, caught: bool = False
    ) -> tuple[Token, Seen]:
        state = follower.state if caught else follower.catch_up()
        token = authenticate(state, presented, instant)
        return token, Seen(led, (state.position, state.at, state.link))

    def _record_use(self, led: AccessLedger, token: Token) -> None:
        """Record a token's first use (TokenUsed, by its principal): once per token, never per request, so
        `audit hygiene` can tell the tokens never used. Another worker recording it first is no failure."""
        try:
            led.append({"type": "TokenUsed", "at": None, "actor": token.principal, "token_id": token.token_id})
        except ConcurrentWrite:
            # Another worker holds the ledger (a new token's first requests reach several at once, each
            # recording this use): the token was checked, so answer; a later request records it if no one has.
            return
        except (StorageError, IntegrityFailure):
            raise
        except LedgerError:
            pass  # recorded already (by another worker or service): the follower folds it next time
        token.used_at = token.used_at or "recorded"  # this worker records it once; the fold gives the time

    def tokens_as_of(self) -> tuple[int, str]:
        """The position and link the token state (what the last request was judged on) is folded to."""
        with self._follow_lock:
            state = self._follower.state if self._follower is not None else None
            return (state.position, state.link) if state is not None else (0, "")

    def wait_for(self, position: int, timeout: float = WAIT_FOR_POSITION) -> None:
        """Return once the ledger's head is at `position` or beyond (a write made through another worker or
        service reaches every reader through the log); NotCaughtUp after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.ledger() as led:  # the lock is not held while waiting: other requests go on
                head = led.head()
            if head >= position:
                return
            if time.monotonic() >= deadline:
                raise NotCaughtUp(
                    f"min_position: the ledger is at position {head}, not at {position}, after waiting {timeout:g} s"
                )
            time.sleep(0.05)

    def _close(self) -> None:
        if self._led is not None:
            try:
                self._led.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped either way
                pass
        self._led = None
        self._follower = None

    def close(self) -> None:
        with self._lock:
            self._close()
