"""Service tokens: `ID.SECRET`, shown once to whoever creates it; the ledger records only the SHA-256 of
the secret (in TokenIssued), so nothing stored, exported or logged can be used as the token."""

from __future__ import annotations

import hashlib
import secrets

ID_PREFIX = "tok_"
#: What a service token may be used for (DESIGN section 6, `token create --scope`).
TOKEN_SCOPES = ("report", "change", "read", "audit", "review", "admin")


def new_token() -> tuple[str, str, str]:
    """A fresh token: (the token to show once, its id, the SHA-256 of its secret as hex)."""
    token_id = ID_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # letters, digits, - and _: never the dot that ends the id
    return f"{token_id}.{secret}", token_id, secret_sha256(secret)


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a presented token, or None when it is not shaped like one."""
    token_id, dot, secret = token.partition(".")
    if not dot or not token_id or not secret or len(token) > 512:
        return None
    return token_id, secret
