"""The review campaigns as two Arrow tables for the `reviews` audit (reports/sql/reviews.sql).

The warehouse holds no campaign facts of its own: its events table keeps only the fields every event
has, and a population is never stored anywhere (DESIGN section 5). So on every run the campaigns are
read from the chained events, each population re-derived and checked against its start event
(projections/reviews.py `derive`), and the two tables are registered on the warehouse's connection
for the one query only: never written into the file, whose bytes are bound to the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from ledger.app import AccessLedger
    from projections.reviews import Campaign
    from reports.warehouse import Warehouse


def _schemas() -> tuple[pa.Schema, pa.Schema]:
    import pyarrow as pa

    ts, text, pos = pa.timestamp("us"), pa.string(), pa.int64()
    campaigns = pa.schema(
        [
            ("campaign", text),
            ("owner", text),
            ("started_at", ts),
            ("start_position", pos),
            ("as_of_position", pos),
            ("tenants", pa.list_(text)),
            ("privileged_only", pa.bool_()),
            ("due", ts),
            ("items", pos),
            ("population_sha256", text),
            ("closed_at", ts),
            ("close_position", pos),
            ("undecided", text),
            ("auto_revoke", pa.bool_()),
            ("closed_by", text),
            ("close_refused", text),
        ]
    )
    items = pa.schema(
        [
            ("campaign", text),
            ("item", pos),
            ("principal", text),
            ("role", text),
            ("tenant", text),
            ("resource", text),
            ("via", text),
            ("expires_at", ts),
            ("privileged", pa.bool_()),
            ("reviewer", text),
            ("decided_by", text),
            ("decision", text),
            ("decided_at", ts),
            ("decision_position", pos),
            ("reason", text),
            ("outcome", text),
            ("granted_by", text),
            ("added_by", text),
            ("removal_position", pos),
            ("removal_at", ts),
            ("batch", text),
            ("batch_sha256", text),
            ("sent_at", ts),
        ]
    )
    return campaigns, items


def _ts(text: str | None) -> datetime | None:
    """A ledger instant as a naive UTC datetime (DuckDB TIMESTAMP)."""
    if text is None:
        return None
    from ledger.timeutil import parse_instant

    return parse_instant(text, "at").astimezone(UTC).replace(tzinfo=None)


def _upto(c: Campaign, last: int) -> Campaign | None:
    """The campaign as the events up to position `last` show it (None if it started later)."""
    from projections.reviews import Campaign

    if c.start_position > last:
        return None
    kept = {i: p for i, p in c.decided_at.items() if p <= last}
    closed = c.close_position is not None and c.close_position <= last
    return Campaign(
        c.name,
        c.start_position,
        c.start,
        {i: c.decisions[i] for i in kept},
        kept,
        c.close if closed else None,
        c.close_position if closed else None,
        reassignments=[(p, ev) for p, ev in c.reassignments if p <= last],
    )


def _access_events(led: AccessLedger, last: int) -> dict[tuple[Any, ...], list[tuple[int, str]]]:
    """(position, at) of every event up to `last` that gives or takes away access (projections.reviews
    ACCESS_EVENTS), by access_key, in position order."""
    from projections.reviews import ACCESS_EVENTS, access_key

    found: dict[tuple[Any, ...], list[tuple[int, str]]] = {}
    for pos, ev in led.read_changes(1, last):
        if ev["type"] in ACCESS_EVENTS:
            found.setdefault(access_key(ev), []).append((pos, ev["at"]))
    return found


def _close_refused(c: Campaign, timeline: Any) -> str | None:
    """Why the close's actor could not have closed the campaign (`review close` refuses it; an imported history
    may hold one), or None."""
    from projections.reviews import close_refusal

    if c.close is None or c.close["actor"] in (c.start["actor"], "system"):
        return None  # the owner: no state needed
    return close_refusal(c, timeline.at_position(c.close_position - 1), c.close["actor"], c.close["at"])


def _sent_at(c: Campaign, item: int) -> str:
    """When the item was last given to a reviewer before its decision (or now): the start, or a reassignment."""
    decided = c.decided_at.get(item)
    sent = c.start["at"]
    for pos, ev in c.reassignments:
        if (decided is None or pos < decided) and item in ev["items"]:
            sent = ev["at"]
    return sent


def review_tables(led: AccessLedger, last: int) -> tuple[pa.Table, pa.Table]:
    """`review_campaigns` and `review_items` from the events up to position `last`, every population
    re-derived and checked (IntegrityFailure names a campaign whose start event does not match)."""
    import pyarrow as pa

    from projections.pit import Timeline
    from projections.reviews import campaigns, carrying_removal, derive, item_rows
    from reports.verified_log import VerifiedLog

    campaign_schema, item_schema = _schemas()
    camp_rows: list[dict[str, Any]] = []
    item_out: list[dict[str, Any]] = []
    found = [c for c in (_upto(c, last) for c in campaigns(led).values()) if c is not None]
    if found:
        # The verified log of an evidence export keeps no checkpoints (it has no ledger to store them in).
        timeline = Timeline(led, persist=not isinstance(led, VerifiedLog))
        current = timeline.current()
        access: dict[tuple[Any, ...], list[tuple[int, str]]] | None = None
        for c in found:
            s = c.start
            items = derive(led, c, timeline)
            rows = item_rows(c, items, current)
            camp_rows.append(
                {
                    "campaign": c.name,
                    "owner": s["actor"],
                    "started_at": _ts(s["at"]),
                    "start_position": c.start_position,
                    "as_of_position": s["as_of_position"],
                    "tenants": s["tenants"],
                    "privileged_only": s["privileged_only"],
                    "due": _ts(s.get("due")),
                    "items": s["items"],
                    "population_sha256": s["population_sha256"],
                    "closed_at": _ts(c.close["at"]) if c.close else None,
                    "close_position": c.close_position,
                    "undecided": c.close["undecided"] if c.close else None,
                    "auto_revoke": c.close["auto_revoke"] if c.close else None,
                    "closed_by": c.close["actor"] if c.close else None,
                    "close_refused": _close_refused(c, timeline),
                }
            )
            for r, row in zip(items, rows):
                d = c.decisions.get(r["item"])
                removal = None
                if row["outcome"] == "revoke":
                    if access is None:
                        access = _access_events(led, last)
                    events = access
                    # The revoke is the decision, or the close for an item left undecided.
                    revoked = c.decided_at[r["item"]] if d is not None else c.close_position
                    removal = carrying_removal(
                        r, s["as_of_position"], revoked, lambda k, events=events: events.get(k, [])
                    )
                item_out.append(
                    {
                        "campaign": c.name,
                        "item": r["item"],
                        "principal": r["principal"],
                        "role": r["role"],
                        "tenant": r["tenant"],
                        "resource": r["resource"],
                        "via": r["via"],
                        "expires_at": _ts(r["expires_at"]),
                        "privileged": r["privileged"],
                        "reviewer": r["reviewer"],
                        "decided_by": d["reviewer"] if d else None,
                        "decision": row["decision"],
                        "decided_at": _ts(row["decided_at"]),
                        "decision_position": c.decided_at.get(r["item"]),
                        "reason": row["reason"],
                        "outcome": row["outcome"],
                        "granted_by": r["granted_by"],
                        "added_by": r["added_by"],
                        "removal_position": removal[0] if removal else None,
                        "removal_at": _ts(removal[1]) if removal else None,
                        "batch": d.get("batch") if d else None,
                        "batch_sha256": d.get("batch_sha256") if d else None,
                        "sent_at": _ts(_sent_at(c, r["item"])),
                    }
                )
    return (pa.Table.from_pylist(camp_rows, schema=campaign_schema), pa.Table.from_pylist(item_out, schema=item_schema))


@contextmanager
def registered(wh: Warehouse) -> Iterator[None]:
    """The two tables, as of the warehouse's position, visible to queries on `wh.con` meanwhile (and
    only then: registered views live in DuckDB's temporary catalog, never in the file)."""
    campaigns_tbl, items_tbl = review_tables(wh.led, wh.position)
    wh.con.register("review_campaigns", campaigns_tbl)
    wh.con.register("review_items", items_tbl)
    try:
        yield
    finally:
        wh.con.unregister("review_campaigns")
        wh.con.unregister("review_items")
