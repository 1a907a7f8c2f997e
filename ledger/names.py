"""Names given to a question: one the ledger never recorded is a typo, refused with the closest names.

A name that existed at some time (deleted, deactivated, or created later than the instant asked
about) is an answer, not an error: a question about the past may name what is gone. The look-up
reads the write model (`al_entities`), which keeps every entity ever created, deleted ones marked
as such: one primary-key look-up per name, and the list of names only when one is unknown. The
write model is derived data, covered by `verify` (replayed from the events and compared row by row).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from ledger.errors import UnknownEntity, ValidationError
from ledger.vocabulary import nfkc, split_principal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ledger.store import Cursor, Store

PRINCIPAL_KINDS = ("user", "service_account", "team")


class NeverRecorded(UnknownEntity):
    """A tenant, principal, role, team or connector that never existed in the ledger (most likely a typo)."""


def closest(
    c: Cursor,
    kinds: tuple[str, ...],
    name: str,
    *,
    as_principal: bool,
    cutoff: float = 0.75,
    with_kind: bool = False,
    pending: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """The recorded names of these kinds that look most like `name` (`kind:NAME` when `as_principal`).

    Names are compared without their kind, which every principal shares (`user:nobody` is not close
    to `user:bob`), unless `with_kind`. `pending`: (kind, name) recorded by a write under way (an
    import's earlier lines) and not yet in the table."""
    c.execute(f"SELECT kind, name FROM al_entities WHERE kind IN ({', '.join('?' for _ in kinds)})", kinds)
    known = {(k, n) for k, n in c.fetchall()} | {(k, n) for k, n in pending if k in kinds}
    shown: dict[str, list[str]] = {}
    for k, n in sorted(known):
        full = f"{k}:{n}" if as_principal else n
        shown.setdefault(full if with_kind else n, []).append(full)
    bare = name.split(":", 1)[1] if as_principal and not with_kind and ":" in name else name
    return [s for n in difflib.get_close_matches(bare, list(shown), n=3, cutoff=cutoff) for s in shown[n]][:3]


def recorded(c: Cursor, kind: str, name: str) -> bool:
    """Did the ledger ever record this entity (deleted and deactivated ones included)?"""
    c.execute("SELECT 1 FROM al_entities WHERE kind = ? AND name = ?", (kind, name))
    return c.fetchone() is not None


def require_recorded(
    store: Store,
    *,
    principal: str | None = None,
    tenant: str | None = None,
    role: str | None = None,
    connector: str | None = None,
    cursor: Cursor | None = None,
) -> None:
    """Refuse any given name the ledger never recorded, naming the closest ones ("did you mean ...?").

    A malformed principal reference is refused as malformed; a `connector` without its `tenant` may be in any tenant.
    With `cursor`, the look-ups run in that read (a batch of questions makes them all in one).
    """
    asked: list[tuple[str, str, str, tuple[str, ...]]] = []  # (label, kind, name, kinds to suggest from)
    if principal is not None:
        kind, name = split_principal(nfkc(principal))
        asked.append(("principal", kind, name, PRINCIPAL_KINDS))
    if tenant is not None:
        asked.append(("tenant", "tenant", nfkc(tenant), ("tenant",)))
    if role is not None:
        asked.append(("role", "role", nfkc(role), ("role",)))
    if cursor is None:
        with store.transaction(write=False) as c:
            _require(c, asked, tenant, connector)
    else:
        _require(cursor, asked, tenant, connector)


def recorded_among(c: Cursor, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (kind, name) the ledger ever recorded: one statement for a question's names (a few
    hundred names a statement for a batch's)."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in dict.fromkeys(keys):
        by_kind.setdefault(kind, []).append(name)
    found: set[tuple[str, str]] = set()
    parts = [(kind, names[i : i + 400]) for kind, names in by_kind.items() for i in range(0, len(names), 400)]
    for start in range(0, len(parts), 8):
        chunk = parts[start : start + 8]
        c.execute(
            "SELECT kind, name FROM al_entities WHERE "
            + " OR ".join(f"(kind = ? AND name IN ({', '.join('?' * len(names))}))" for _, names in chunk),
            [value for kind, names in chunk for value in (kind, *names)],
        )
        found.update((kind, name) for kind, name in c.fetchall())
    return found


def question_keys(principal: str | None, tenant: str | None, connector: str | None) -> list[tuple[str, str]] | None:
    """The (kind, name) a question's names must be recorded as (`require_recorded`'s look-ups); None when
    one cannot be told without it (a malformed principal, a connector in any tenant)."""
    keys = [("organization", "")]
    if principal is not None:
        try:
            keys.append(split_principal(nfkc(principal)))
        except ValidationError:
            return None
    if tenant is not None:
        keys.append(("tenant", nfkc(tenant)))
    if connector is not None:
        if tenant is None:
            return None
        keys.append(("connector", f"{nfkc(tenant)}/{nfkc(connector)}"))
    return keys


def _require(
    c: Cursor, asked: list[tuple[str, str, str, tuple[str, ...]]], tenant: str | None, connector: str | None
) -> None:
    key = f"{nfkc(tenant)}/{nfkc(connector)}" if connector is not None and tenant is not None else None
    found = recorded_among(
        c, [("organization", ""), *((kind, name) for _, kind, name, _ in asked), *([("connector", key)] if key else [])]
    )
    if ("organization", "") not in found:
        return  # an empty ledger: the question itself says there is nothing yet
    for label, kind, name, kinds in asked:
        if (kind, name) not in found:
            shown = f"{kind}:{name}" if label == "principal" else name
            _refuse(label, shown, closest(c, kinds, shown, as_principal=label == "principal"))
    if connector is not None and tenant is None:  # any tenant's connector of that name
        c.execute("SELECT name FROM al_entities WHERE kind = 'connector'")
        known = sorted({n.split("/", 1)[1] for (n,) in c.fetchall()})
        if nfkc(connector) not in known:
            _refuse("service connector", connector, difflib.get_close_matches(nfkc(connector), known, n=3, cutoff=0.75))
    elif key is not None:
        if ("connector", key) not in found:
            c.execute("SELECT name FROM al_entities WHERE kind = 'connector' AND ref = ?", (nfkc(tenant),))
            known = sorted(n.split("/", 1)[1] for (n,) in c.fetchall())
            _refuse(
                "service connector",
                connector,
                difflib.get_close_matches(nfkc(connector), known, n=3, cutoff=0.75),
                f" in tenant {tenant!r}",
            )


def _refuse(label: str, name: str, close: list[str], where: str = "") -> None:
    hint = f"did you mean {' or '.join(close)}?" if close else "no recorded name is close"
    raise NeverRecorded(f"unknown {label} {name!r}{where}: never recorded in this ledger ({hint})")
