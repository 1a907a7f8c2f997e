"""Service tokens as the chain records them: who holds which token, with what scopes, until when.

`TokenFollower` folds TokenIssued / TokenRevoked / TokenUsed and the principals' status events into a
`TokenState` held in memory, reading the stored events themselves (never a side table) and
recomputing the hash chain over every event it reads, from the genesis link on: each link must be
the one `al_chain` holds at that position, positions must be dense, and after the last event the
link must be the head's. So a token added, widened or un-revoked by editing the database is caught
before it is ever honoured: an edited or inserted event changes its link (IntegrityFailure, the
service answers 503 and `verify` names the position); edited side tables (al_entities, snapshots)
are not read at all. Who could also recompute every later link and the head is caught by the seals
(HMAC or Ed25519, DESIGN section 5) when `verify` runs with the key or a digest held outside; and with
ACCESS_LEDGER_SEAL_KEY set, at once: the head folded to must carry the key's seal (checked once per
head), so a token or revocation written without the key, chain and head consistent, is never honoured
(every write seals its head, and no keyed write extends a head without the key's seal).
Events the follower has already folded are never re-read: an edit of them after the fact cannot
change what it honours.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledger.errors import IntegrityFailure, LedgerError
from ledger.integrity import next_link
from ledger.store import GENESIS_LINK, Store
from ledger.tokens import secret_sha256, split_token

_STATUS = {
    "UserCreated": ("user", True),
    "UserDeactivated": ("user", False),
    "UserReactivated": ("user", True),
    "ServiceAccountCreated": ("service_account", True),
    "ServiceAccountDeactivated": ("service_account", False),
    "ServiceAccountReactivated": ("service_account", True),
}
# The events the fold needs, told by their first bytes (canonical form starts with the type): the rest,
# usage events above all, are hashed for the chain but never decoded.
_WANTED = tuple(f'{{"type":"{t}"'.encode() for t in (*_STATUS, "TokenIssued", "TokenRevoked", "TokenUsed"))
_READ_BATCH = 5000


class TokenRefused(LedgerError):
    """A presented token that may not be used: missing, unknown, revoked, expired, or without the scope."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Token:
    token_id: str
    principal: str
    scopes: tuple[str, ...]
    expires_at: str | None
    secret_sha256: str
    issued_at: str
    issued_by: str
    issued_position: int
    reason: str | None
    revoked_at: str | None = None
    revoked_position: int | None = None
    used_at: str | None = None  # its first use, as the service recorded it (TokenUsed)


@dataclass
class TokenState:
    """The tokens and principal statuses as of `position`, whose chain link is `link`."""

    position: int = 0
    link: str = GENESIS_LINK
    at: str = ""
    tokens: dict[str, Token] = field(default_factory=dict)
    active: dict[str, bool] = field(default_factory=dict)  # principal ref -> active

    def apply(self, position: int, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind in _STATUS:
            prefix, active = _STATUS[kind]
            self.active[f"{prefix}:{ev[prefix]}"] = active
        elif kind == "TokenIssued":
            self.tokens[ev["token_id"]] = Token(
                ev["token_id"],
                ev["principal"],
                tuple(ev["scopes"]),
                ev.get("expires_at"),
                ev["secret_sha256"],
                ev["at"],
                ev["actor"],
                position,
                ev.get("reason"),
            )
        elif kind == "TokenUsed":
            token = self.tokens.get(ev["token_id"])
            if token is not None:
                token.used_at = ev["at"]
        elif kind == "TokenRevoked":
            token = self.tokens.get(ev["token_id"])
            if token is not None:
                token.revoked_at, token.revoked_position = ev["at"], position

    def status(self, token: Token, instant: str) -> str:
        """active, revoked, expired, or `principal deactivated` at `instant`."""
        if token.revoked_at is not None:
            return "revoked"
        if token.expires_at is not None and instant >= token.expires_at:
            return "expired"
        if not self.active.get(token.principal, False):
            return "principal deactivated"
        return "active"


class TokenFollower:
    """A TokenState kept caught up with the log, its chain recomputed on the way (see the module docstring)."""

    def __init__(self, store: Store):
        self.store = store
        self.state = TokenState()

    def extend(self, start: tuple[int, str], events: list[tuple[int, bytes]], end: tuple[int, str, str]) -> bool:
        """Fold a write this process has just committed: `events` (position, stored bytes), whose links it
        computed itself from those bytes, from `start` (position, link: the head it locked and checked) to `end`
        (position, link, time). Only when the state stands exactly at `start`; False (nothing folded) if not, and
        the next catch_up reads them. Their bytes are the ones committed, so reading them back would recompute
        the same links: the write's own events are not hashed twice."""
        s = self.state
        if (s.position, s.link) != start:
            return False
        for pos, state in events:
            if state.startswith(_WANTED):
                s.apply(pos, orjson.loads(state))
        s.position, s.link, s.at = end
        return True

    def catch_up(self) -> TokenState:
        """Fold the events written since the last call; IntegrityFailure if the chain does not hold or, with the
        seal key, the head does not carry the key's seal (`head_in` checks it, once per head)."""
        s = self.state
        with self.store.transaction(write=False) as c:  # the head and the first events after s in one read
            head, head_at, head_link = self.store.head_in(c)
            rows: list | None = self.store.read_raw(c, s.position + 1, _READ_BATCH, head) if s.position < head else []
        if head < s.position:
            raise IntegrityFailure(
                f"the log's head moved back from position {s.position} to {head}: the ledger "
                "was tampered with; run `access-ledger verify`"
            )
        position, link = s.position, s.link
        while position < head:
            if rows is None:
                with self.store.transaction(write=False) as c:
                    rows = self.store.read_raw(c, position + 1, _READ_BATCH, head)
            if not rows:
                break
            for pos, oid, version, topic, state, stored_link, _at in rows:
                if pos != position + 1:
                    raise IntegrityFailure(
                        f"the log has no event at position {position + 1}: the ledger was "
                        "tampered with; run `access-ledger verify`"
                    )
                link = next_link(link, pos, oid, version, topic, state)
                if stored_link != link:
                    raise IntegrityFailure(
                        f"the chain breaks at position {pos}: the ledger was tampered with; run `access-ledger verify`"
                    )
                if state.startswith(_WANTED):
                    s.apply(pos, orjson.loads(state))
                position = pos
            s.position, s.link = position, link  # what is folded is kept, whatever comes next
            rows = None
        if position != head or link != head_link:
            raise IntegrityFailure(
                f"the log ends at position {position}, not at its head {head} with its link: "
                "the ledger was tampered with; run `access-ledger verify`"
            )
        s.at = head_at
        return s


def authenticate(state: TokenState, presented: str | None, instant: str) -> Token:
    """The token `presented` names if it may be used at `instant`, else TokenRefused (401) saying why."""
    if not presented:
        raise TokenRefused(401, "missing", "missing token: send Authorization: Bearer TOKEN")
    parts = split_token(presented)
    token = state.tokens.get(parts[0]) if parts else None
    # Compared in constant time, and compared even for an unknown id, so timing tells nothing.
    expected = token.secret_sha256 if token is not None else "0" * 64
    matches = hmac.compare_digest(secret_sha256(parts[1] if parts else presented), expected)
    if token is None or not matches:
        raise TokenRefused(401, "unknown", "unknown token")
    status = state.status(token, instant)
    if status == "revoked":
        raise TokenRefused(401, "revoked", f"revoked token {token.token_id} (at {token.revoked_at})")
    if status == "expired":
        raise TokenRefused(401, "expired", f"expired token {token.token_id} (at {token.expires_at})")
    if status != "active":
        raise TokenRefused(401, "inactive", f"token {token.token_id}: its principal {token.principal} is deactivated")
    return token


def require_scope(token: Token, scopes: tuple[str, ...]) -> None:
    """TokenRefused (403) unless the token holds one of `scopes`."""
    if not any(s in token.scopes for s in scopes):
        wanted = " or ".join(scopes)
        raise TokenRefused(
            403, "scope", f"token {token.token_id} lacks the scope {wanted} (it has {', '.join(token.scopes)})"
        )


def token_rows(state: TokenState, instant: str) -> list[dict[str, Any]]:
    """One row per token ever issued, with its status at `instant` (never its secret or hash)."""
    return [
        {
            "token_id": t.token_id,
            "principal": t.principal,
            "scopes": list(t.scopes),
            "status": state.status(t, instant),
            "expires_at": t.expires_at,
            "issued_at": t.issued_at,
            "issued_by": t.issued_by,
            "position": t.issued_position,
            "revoked_at": t.revoked_at,
            "reason": t.reason,
        }
        for t in sorted(state.tokens.values(), key=lambda t: t.issued_position)
    ]
