"""What a running service holds: the open ledger, the lock that serialises its use, and the token follower.

Tokens are looked up in `TokenFollower`'s state, folded from the stored events with the hash chain
recomputed over each of them (see projections.tokens): no side table decides who may call the service,
so a token written into the database by hand is refused (the chain breaks: 503 until `verify` has been
run and the log repaired), and an edit of a token row in al_entities changes nothing here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ledger.app import AccessLedger
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


class Service:
    """One ledger, opened on first use and reopened after a failure, used by one request at a time."""

    def __init__(self, url: str):
        self.url = url
        self._led: AccessLedger | None = None
        self._follower: TokenFollower | None = None
        self._lock = threading.RLock()  # re-entered by the calls made inside `reading`
        self._depth = 0

    @contextmanager
    def ledger(self, seen: Seen | None = None) -> Iterator[AccessLedger]:
        """The open ledger, for the duration of one call (requests take turns). With `seen` (what this
        request's token check read), a read is answered at the head checked then, not at a second read."""
        with self._lock:
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
                if outermost and (
                    not isinstance(exc, LedgerError) or isinstance(exc, (StorageError, IntegrityFailure))
                ):
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

    def authenticate(self, presented: str | None, scopes: tuple[str, ...], instant: str) -> Token:
        """The token presented, if the ledger's current token state lets it use one of `scopes` (TokenRefused if not)."""
        return self.authenticated(presented, scopes, instant)[0]

    def authenticated(self, presented: str | None, scopes: tuple[str, ...], instant: str) -> tuple[Token, Seen]:
        """`authenticate`, and the head the token state was caught up to (checked against the log on the way)."""
        with self.ledger() as led:
            assert self._follower is not None
            state = self._follower.catch_up()
            token = authenticate(state, presented, instant)
            seen = Seen(led, (state.position, state.at, state.link))
            if token.used_at is None:
                self._record_use(led, token)
                # The use is an event: the head moved on, maybe past a revocation another writer made since
                # the check above, so the token is judged again at the head the answer is pinned to (inside
                # `reading`, that head is still the snapshot's, the one the token was checked at).
                state = self._follower.catch_up()
                token = authenticate(state, presented, instant)
                seen = Seen(led, (state.position, state.at, state.link))
        require_scope(token, scopes)
        return token, seen

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
        with self._lock:
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
