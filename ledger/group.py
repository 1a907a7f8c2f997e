"""Group commit: several requests' events written in one transaction and one extension of the head.

Each request keeps what it would have had alone, written right after the requests before it in the group:
all or nothing, idempotence by id, the rules (and the authority rules, when asked) judged on the state that
includes the earlier requests, and its own answer (its positions, and the head and link at its last event).
A refused request is undone in memory (and, if the write model had flushed part of it, back to a savepoint
taken just before): positions and the chain stay dense, and the requests after it go on. A database error
fails the group: the caller writes the requests one at a time then, so no request fails because of another.
Nothing here is stored beside what a single write stores: the events, their links and ids, the seals (every
SEAL_EVERY positions and at the group's head) and the head row.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ledger import errors as E
from ledger.app import (
    FUTURE_SLACK,
    TOPIC_PREFIX,
    AccessLedger,
    WriteResult,
    _admitted,
    _next_version,
    _with_field,
    _write_rows,
)
from ledger.events import USAGE_TYPES
from ledger.integrity import SEAL_EVERY, next_link, write_seal
from ledger.model import WriteModel
from ledger.store import stream_id, usage_stream
from ledger.timeutil import format_instant, now

#: A request with more events than this is written on its own (the import path overlaps its rows' writing).
GROUP_EVENTS = 2000
Chunk = list[tuple[int, dict[str, Any]]]


@dataclass
class Committed:
    """What a group wrote, once committed: from `start` (position, link of the head it locked) to `end`
    (position, link, time), the events as (position, stored bytes)."""

    start: tuple[int, str] = (0, "")
    end: tuple[int, str, str] = (0, "", "")
    events: list[tuple[int, bytes]] = field(default_factory=list)


def write_group(
    led: AccessLedger, requests: list[tuple[Chunk, bool]], committed: Committed | None = None
) -> list[WriteResult | E.LedgerError]:
    """Write each (events, enforce_authority) request, in order, in one transaction: one answer per request,
    its WriteResult or the LedgerError that refused it. StorageError or IntegrityFailure: nothing was written.
    With `committed`, it is filled in once the transaction has committed."""
    store = led.store
    latest = format_instant(now() + FUTURE_SLACK)
    # Copies: a request refused here, or a group given up, leaves the caller's events as they came.
    requests = [([(n, dict(ev)) for n, ev in chunk], enforce) for chunk, enforce in requests]
    out: list[WriteResult | E.LedgerError] = []
    with store.transaction(write=True) as c:
        pos, last_at, link = store.lock_head(c)
        start = (pos, link)
        group_first = pos + 1
        model = WriteModel(
            c,
            empty=group_first == 1,
            stored=lambda ps: store.states_at(c, [p for p in ps if p < group_first]),
        )
        wanted = list({ev["id"] for chunk, _ in requests for _, ev in chunk if "id" in ev})
        # The ids recorded before the group; those of its earlier requests join as they are accepted.
        known = store.known_ids(c, wanted) if wanted else {}
        rows: list[tuple[int, str, int, str, bytes]] = []
        chain: list[tuple[int, str, str]] = []
        ids: list[tuple[str, int]] = []
        versions: dict[str, int] = {}
        streams_complete = group_first == 1
        savepoint = [False]

        def take_savepoint() -> None:
            c.execute("SAVEPOINT al_group")
            savepoint[0] = True
            model.before_write = None

        for chunk, enforce in requests:
            model.flush()  # the earlier requests' changes are in the tables: a refusal undoes only this one's
            model.judge(enforce)
            mark = (pos, last_at, link, len(rows), len(chain), len(ids), set(model.batches_here))
            savepoint[0] = False
            model.before_write = take_savepoint
            undo: list[tuple[str, int | None]] = []
            mine: dict[str, bytes] = {}
            skipped = 0
            try:
                model.prefetch(chunk)
                for lineno, ev in chunk:
                    try:
                        state = _admitted(ev, last_at, latest, mine, {}, known)
                        if state is None:
                            skipped += 1
                            continue
                        at, event_id = ev["at"], ev.get("id")
                        etype = ev["type"]
                        key = model.apply(ev)
                        pos += 1
                        if etype in USAGE_TYPES:
                            oid, version = usage_stream(pos), 1
                        else:
                            oid = stream_id(key).hex
                            undo.append((oid, versions.get(oid)))
                            version = _next_version(c, store, versions, oid, streams_complete)
                        topic = TOPIC_PREFIX + etype
                        link = next_link(link, pos, oid, version, topic, state)
                        rows.append((pos, oid, version, topic, state))
                        chain.append((pos, at, link))
                        if event_id is not None:
                            ids.append((event_id, pos))
                            mine[event_id] = state
                        last_at = at
                    except E.LedgerError as exc:
                        if isinstance(exc, (E.StorageError, E.IntegrityFailure)):
                            raise
                        if lineno:
                            raise type(exc)(f"line {lineno}: {_with_field(str(exc), ev)}") from None
                        raise
            except E.LedgerError as exc:
                if isinstance(exc, (E.StorageError, E.IntegrityFailure)):
                    raise
                model.before_write = None
                if savepoint[0]:
                    c.execute("ROLLBACK TO SAVEPOINT al_group")
                    c.execute("RELEASE SAVEPOINT al_group")
                pos, last_at, link, n_rows, n_chain, n_ids, batches = mark
                del rows[n_rows:], chain[n_chain:], ids[n_ids:]
                for oid, before in reversed(undo):
                    if before is None:
                        versions.pop(oid, None)
                    else:
                        versions[oid] = before
                model.forget(batches)
                out.append(exc)
                continue
            model.before_write = None
            if savepoint[0]:
                c.execute("RELEASE SAVEPOINT al_group")  # one subtransaction at a time, however large the group
            first = mark[0] + 1
            for event_id, p in ids[mark[5] :]:
                known[event_id] = (p, mine[event_id])
            written = pos - mark[0]
            out.append(WriteResult(written, skipped, first if written else None, pos if written else None, (pos, link)))
        model.flush()
        _write_rows(c, store, rows, chain, ids)
        if pos >= group_first:
            # On PostgreSQL the seals and the head row in one round trip (pipeline mode: nothing is read back).
            with c.raw.connection.pipeline() if store.postgres else nullcontext():
                sealed_at = format_instant(now())
                for p in range(group_first + (-group_first) % SEAL_EVERY, pos, SEAL_EVERY):
                    write_seal(c, p, chain[p - group_first][2], sealed_at)
                write_seal(c, pos, link, sealed_at)
                c.execute("UPDATE al_head SET position = ?, at = ?, link = ? WHERE id = 1", (pos, last_at, link))
    if committed is not None:
        committed.start, committed.end = start, (pos, link, last_at)
        committed.events = [(row[0], row[4]) for row in rows]
    return out
