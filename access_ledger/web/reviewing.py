"""What the pages show and record about review campaigns: the records go through access_ledger.api's review
functions (the ones `review decide/reassign/close` call); the close's preview asks projections.reviews.

The items of a campaign with their context are derived from the chained events at the campaign's start
position and checked there against the start event's count and SHA-256 (projections.reviews.derive); they
are kept in memory per (campaign, start position, reassignments), never in a file, so nothing outside the
chain feeds them. Decisions and close are re-read from the log on every request.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any

from ledger.app import AccessLedger
from ledger.errors import LedgerError, ReviewRefused, ValidationError
from projections.reviews import Campaign, campaigns, close_refusal, derive, removals


@dataclass
class Items:
    """A campaign's items (population facts, context, reviewer, grant), as derived at its start."""

    key: tuple[Any, ...]
    rows: list[dict[str, Any]]


_cache_lock = threading.Lock()


def _key(c: Campaign) -> tuple[Any, ...]:
    return (c.name, c.start_position, c.start["population_sha256"], tuple(pos for pos, _ in c.reassignments))


class _Folded:
    """A timeline that has folded the one position derive asks for (the fold is most of a derive's time)."""

    def __init__(self, state: Any):
        self.state = state

    def at_position(self, position: int) -> Any:
        return self.state


def items_of(led: AccessLedger, c: Campaign) -> list[dict[str, Any]]:
    """The campaign's items with context and the grant behind each (who granted it, when, why)."""
    all_campaigns(led, 0)  # the items kept are those of this ledger (a reopened one starts afresh)
    _cache = _campaigns.items
    with _cache_lock:
        hit = _cache.get(c.name)
        if hit is not None and hit.key == _key(c):
            return hit.rows
    from projections.pit import Timeline
    from reports.sod import load_rules

    state = Timeline(led).at_position(c.start["as_of_position"])
    rules = [(rule.id, rule.left, rule.right) for rule in load_rules(None)[0]]
    rows = derive(led, c, _Folded(state), context=True, sod_rules=rules)
    for r in rows:
        holder = f"team:{r['via']}" if r["via"] else r["principal"]
        a = state.assignments.get((r["role"], holder, r["tenant"], r["resource"]))
        src = a.source if a is not None else None
        r["grant"] = {"at": src.at, "actor": src.actor, "reason": src.reason, "position": src.position} if src else None
        member = state.members.get(r["via"], {}).get(r["principal"]) if r["via"] else None
        r["membership"] = {"at": member.at, "actor": member.actor, "reason": member.reason} if member else None
    with _cache_lock:
        _cache[c.name] = Items(_key(c), rows)
    return rows


class Campaigns:
    """The campaigns folded from the log as far as the token follower has checked its chain, brought on
    incrementally (the log is append-only; events folded once are not re-read, as the token follower)."""

    def __init__(self) -> None:
        self.position = 0
        self.found: dict[str, Campaign] = {}
        self.store: Any = None
        self.items: dict[str, Items] = {}  # per campaign name, with the key it was derived for

    def catch_up(self, led: AccessLedger, verified: int) -> dict[str, Campaign]:
        if self.store is not led.store:  # another (or a reopened) ledger: fold again from the start
            self.position, self.found, self.store, self.items = 0, {}, led.store, {}
        if verified > self.position:
            campaigns(led, self.position + 1, verified, self.found)
            self.position = verified
        return self.found


_campaigns = Campaigns()
_campaigns_lock = threading.Lock()


def all_campaigns(led: AccessLedger, verified: int | None = None) -> dict[str, Campaign]:
    """Every campaign, up to the position `verified` (default: the head)."""
    with _campaigns_lock:
        return _campaigns.catch_up(led, led.head() if verified is None else verified)


def open_campaigns(led: AccessLedger, verified: int | None = None) -> dict[str, Campaign]:
    return {name: c for name, c in all_campaigns(led, verified).items() if c.close is None}


def find(led: AccessLedger, name: str) -> Campaign:
    found = all_campaigns(led)
    if name not in found:
        raise ReviewRefused(f"there is no review campaign {name!r}")
    return found[name]


def decide(led: AccessLedger, name: str, wanted: list[tuple[int, str, str | None]], actor: str) -> int:
    """Record `actor`'s decisions (item, keep|revoke, reason) through api.review_decide: one, or several as
    one batch (the SHA-256 of the decisions as item,decision,reason lines); all or none. The number written."""
    from access_ledger import api

    if not wanted:
        raise ValidationError("no item selected")
    for _, what, why in wanted:
        if what == "revoke" and not (why or "").strip():
            raise ReviewRefused("a revoke needs a reason")
    rows = [(n, number, what, (why or "").strip() or None) for n, (number, what, why) in enumerate(wanted, 1)]
    digest = None
    if len(rows) > 1:
        digest = hashlib.sha256("".join(f"{i},{d},{r or ''}\n" for _, i, d, r in rows).encode()).hexdigest()
    try:
        return api.review_decide(led, name, rows, actor=actor, batch_sha256=digest)["written"]
    except LedgerError as exc:
        # The CLI's batch messages name the file's line; here the item is named in the message itself.
        raise type(exc)(_LINE.sub("", str(exc))) from None


_LINE = re.compile(r"^line \d+: ")


def reassign(led: AccessLedger, name: str, numbers: list[int], to: str, actor: str, reason: str | None) -> int:
    """Give undecided items to another reviewer (the campaign's owner only), through api.review_reassign."""
    from access_ledger import api

    if not (reason or "").strip():
        raise ReviewRefused("a reassignment needs a reason")
    if not numbers:
        raise ValidationError("no item given")
    find(led, name)
    return api.review_reassign(led, name, numbers, to, actor=actor, reason=(reason or "").strip())["position"]


def close_plan(led: AccessLedger, name: str, undecided: str, actor: str) -> tuple[Campaign, list[dict[str, Any]]]:
    """The campaign and the removals closing it with `undecided` (revoke, keep, exception) would record."""
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline

    c = find(led, name)
    if c.close is not None:
        raise ReviewRefused(f"review campaign {name!r} is already closed")
    current = Timeline(led).current()
    refusal = close_refusal(c, current, actor, max(format_instant(now()), led.newest_at() or ""))
    if refusal:
        raise ReviewRefused(refusal)
    return c, removals(c, items_of(led, c), undecided, current, actor)


def close(led: AccessLedger, name: str, undecided: str, actor: str, reason: str | None, expected: int) -> int:
    """Close the campaign through api.review_close, if the removals are still the `expected` number shown."""
    from access_ledger import api

    _, removed = close_plan(led, name, undecided, actor)
    if len(removed) != expected:
        raise ReviewRefused(
            f"the campaign changed since the preview ({len(removed)} removals now, not {expected}): look again"
        )
    done = api.review_close(led, name, undecided, actor=actor, reason=(reason or "").strip() or None)
    return len(done["removed"])
