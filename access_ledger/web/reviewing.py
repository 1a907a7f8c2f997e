"""What the pages show and record about review campaigns, over projections.reviews (as `review ...` does).

The items of a campaign with their context are derived from the chained events at the campaign's start
position and checked there against the start event's count and SHA-256 (projections.reviews.derive); they
are kept in memory per (campaign, start position, reassignments), never in a file, so nothing outside the
chain feeds them. Decisions and close are re-read from the log on every request.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from ledger.app import AccessLedger
from ledger.errors import ReviewRefused, ValidationError
from projections.reviews import Campaign, campaigns, close_refusal, decision_event, derive, reassign_event, removals


@dataclass
class Items:
    """A campaign's items (population facts, context, reviewer, grant), as derived at its start."""

    key: tuple[Any, ...]
    rows: list[dict[str, Any]]


_cache: dict[str, Items] = {}
_cache_lock = threading.Lock()


def _key(c: Campaign) -> tuple[Any, ...]:
    return (c.name, c.start_position, tuple(pos for pos, _ in c.reassignments))


def items_of(led: AccessLedger, c: Campaign) -> list[dict[str, Any]]:
    """The campaign's items with context and the grant behind each (who granted it, when, why)."""
    with _cache_lock:
        hit = _cache.get(c.name)
        if hit is not None and hit.key == _key(c):
            return hit.rows
    from projections.pit import Timeline
    from reports.sod import load_rules

    timeline = Timeline(led)
    rules = [(rule.id, rule.left, rule.right) for rule in load_rules(None)[0]]
    rows = derive(led, c, timeline, context=True, sod_rules=rules)
    state = timeline.at_position(c.start["as_of_position"])
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


def open_campaigns(led: AccessLedger) -> dict[str, Campaign]:
    return {name: c for name, c in campaigns(led).items() if c.close is None}


def find(led: AccessLedger, name: str) -> Campaign:
    found = campaigns(led)
    if name not in found:
        raise ReviewRefused(f"there is no review campaign {name!r}")
    return found[name]


def decide(led: AccessLedger, name: str, wanted: list[tuple[int, str, str | None]], actor: str) -> list[int]:
    """Record `actor`'s decisions (item, keep|revoke, reason): one, or several as one batch; all or none."""
    if not wanted:
        raise ValidationError("no item selected")
    for _, what, why in wanted:
        if what not in ("keep", "revoke"):
            raise ValidationError(f"decision {what!r} is not keep or revoke")
        if what == "revoke" and not (why or "").strip():
            raise ReviewRefused("a revoke needs a reason")
    c = find(led, name)
    population = items_of(led, c)
    events, seen = [], set()
    batch = uuid.uuid4().hex if len(wanted) > 1 else None
    digest = hashlib.sha256("".join(f"{n},{d},{r or ''}\n" for n, d, r in wanted).encode()).hexdigest()
    for number, what, why in wanted:
        if number in seen:
            raise ValidationError(f"item {number} is given twice")
        seen.add(number)
        ev = decision_event(c, population, number, what, (why or "").strip() or None, actor)
        if batch:
            ev.update(batch=batch, batch_sha256=digest)
        events.append(ev)
        c.decisions[number] = ev  # later rows of the batch see it (one membership, one outcome)
    result = led.append_many(events)
    return list(range(result.first, result.last + 1))


def reassign(led: AccessLedger, name: str, numbers: list[int], to: str, actor: str, reason: str | None) -> int:
    """Give undecided items to another reviewer (the campaign's owner only)."""
    if not (reason or "").strip():
        raise ReviewRefused("a reassignment needs a reason")
    if not numbers:
        raise ValidationError("no item given")
    c = find(led, name)
    return led.append(reassign_event(c, items_of(led, c), numbers, to, actor, reason.strip()))


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
    """Close the campaign as `review close` does, if the removals are still the `expected` number shown."""
    c, removed = close_plan(led, name, undecided, actor)
    if len(removed) != expected:
        raise ReviewRefused(
            f"the campaign changed since the preview ({len(removed)} removals now, not {expected}): look again"
        )
    event: dict[str, Any] = {
        "type": "ReviewClosed",
        "at": None,
        "actor": actor,
        "campaign": name,
        "undecided": undecided,
        "auto_revoke": True,
    }
    if (reason or "").strip():
        event["reason"] = reason.strip()
    return led.append_many([event, *removed]).first
