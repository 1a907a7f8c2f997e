"""Signed session cookies and CSRF tokens (HMAC-SHA256 with a key that never leaves the server process).

The cookie holds the token id, the position that issued the token, a random session id and an expiry, signed;
it never holds the token's secret. Every request re-checks the named token against the ledger's token state
folded from the chain (revoked, expired or deactivated: refused at once). An edited cookie fails the
signature; a cookie of another session carries another session id, so a form's CSRF token does not match it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import orjson

COOKIE = "al_session"
PRE_COOKIE = "al_signin"  # the sign-in form's double-submit value (no session yet)
MAX_AGE = 12 * 3600  # seconds: a session ends then, or when its token expires, whichever is first


@dataclass(frozen=True)
class Session:
    token_id: str
    issued_position: int
    sid: str
    expires: int  # epoch seconds


class Keys:
    """The server's signing key: $ACCESS_LEDGER_WEB_KEY (hex, shared by workers) or random per process."""

    def __init__(self, key: bytes | None = None):
        env = os.environ.get("ACCESS_LEDGER_WEB_KEY")
        self.key = key or (bytes.fromhex(env) if env else secrets.token_bytes(32))

    def _mac(self, purpose: str, data: bytes) -> str:
        return hmac.new(self.key, purpose.encode() + b"\0" + data, hashlib.sha256).hexdigest()

    def cookie(self, s: Session) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps([s.token_id, s.issued_position, s.sid, s.expires])).decode()
        return f"{body}.{self._mac('session', body.encode())}"

    def read(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie value, or None if it is missing, malformed, forged or expired."""
        if not value or len(value) > 1024 or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac("session", body.encode())):
            return None
        try:
            token_id, position, sid, expires = orjson.loads(base64.urlsafe_b64decode(body))
        except (ValueError, TypeError):
            return None
        if (now if now is not None else time.time()) >= expires:
            return None
        return Session(token_id, position, sid, expires)

    def csrf(self, sid: str) -> str:
        return self._mac("csrf", sid.encode())

    def csrf_ok(self, sid: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented), self.csrf(sid))
