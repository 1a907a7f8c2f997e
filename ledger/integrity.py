"""Tamper evidence: the hash chain over the log, seals, digests and verification.

Each position's link is SHA-256 over the previous link and the stored record's canonical
bytes (position, stream, version, topic, state). The link of every position is kept in
`al_chain`; seals record (position, link), HMAC-keyed when ACCESS_LEDGER_SEAL_KEY is set; a
digest is the head's (position, link) written to a file the auditor keeps outside the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ledger import signing
from ledger.errors import IntegrityFailure, ValidationError
from ledger.store import _AT_KEY, GENESIS_LINK, Cursor, Store

if TYPE_CHECKING:
    from collections.abc import Callable

SEAL_EVERY = 10_000
# Rows read per query of the walk. Small on purpose: a batch this size fits in the memory Python
# has just freed, while 20,000 rows (some 13 MB of objects) were fresh memory for every batch,
# page faults and all. Measured on a 10M-event log: 28 s against 53 s for the whole walk.
WALK_BATCH = 500
_sha256 = hashlib.sha256
KEY_ENV = "ACCESS_LEDGER_SEAL_KEY"


def next_link(prev: str, position: int, originator_hex: str, version: int, topic: str, state: bytes) -> str:
    """SHA-256 of `prev\nposition\noriginator\nversion\ntopic\n` followed by the state bytes."""
    return _sha256(
        b"%s\n%d\n%s\n%d\n%s\n%s" % (prev.encode(), position, originator_hex.encode(), version, topic.encode(), state)
    ).hexdigest()


def seal_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def seal_mac(position: int, link: str, key: bytes | None) -> str | None:
    if key is None:
        return None
    return hmac.new(key, f"{position}:{link}".encode(), hashlib.sha256).hexdigest()


def head_seal_problem(position: int, link: str, seal: tuple[Any, Any] | None, key: bytes) -> str | None:
    """Why the seal (link, mac) read at the head (position, link) does not vouch for it under `key`; None if it
    does. Every write seals its head, so a head without the key's seal was written (or its seal removed) by
    someone without the key: with the key, what it holds is honoured by no token check and extended by no
    write, or a later keyed seal would vouch for it."""
    if position == 0:
        return None
    s_link, s_mac = seal if seal is not None else (None, None)
    s_hmac = signing.split_seal(s_mac)[0] if isinstance(s_mac, str) else None
    if s_link == link and s_hmac is not None and hmac.compare_digest(s_hmac, seal_mac(position, link, key) or ""):
        return None
    why = "no seal" if seal is None else "a seal without the key's HMAC" if s_hmac is None else "a wrong seal"
    return (
        f"the head (position {position}) carries {why}, but {KEY_ENV} is set: events were written without the "
        "key, or its seal was removed; nothing is honoured or written over it; run `access-ledger verify`"
    )


def sealed_head(c: Cursor, position: int, link: str, key: bytes) -> None:
    """IntegrityFailure unless al_seals holds the key's seal of the head (position, link) (see head_seal_problem)."""
    c.execute("SELECT link, mac FROM al_seals WHERE position = ?", (position,))
    problem = head_seal_problem(position, link, c.fetchone(), key)
    if problem is not None:
        raise IntegrityFailure(problem)


def write_seal(c: Cursor, position: int, link: str, sealed_at: str) -> None:
    """Seal (position, link): HMAC with the seal key, and an Ed25519 signature with the signing key, each
    when configured (both kept in `mac`: the HMAC, then `ed25519:` and the signature; see ledger.signing)."""
    mac = seal_mac(position, link, seal_key())
    if signing.configured():
        mac = signing.join_seal(mac, signing.seal_signature(position, link))
    c.execute(
        "INSERT INTO al_seals (position, link, mac, sealed_at) VALUES (?, ?, ?, ?) ON CONFLICT (position) DO NOTHING",
        (position, link, mac, sealed_at),
    )


@dataclass
class VerifyResult:
    ok: bool
    events: int
    head: int
    link: str
    seals: int
    first_bad: int | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)  # derived rows that disagree with the events

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "head": self.head,
            "link": self.link,
            "seals": self.seals,
            "first_bad_position": self.first_bad,
            "problem": self.problem,
            "notes": self.notes,
            "derived_problems": self.derived,
        }


@dataclass
class _Walk:
    """How far a walk along the log got: events checked, the link reached, seals whose HMAC could
    not be checked for want of the key, the first failure (position, problem), if any, the time of the
    last event, and how many events carry an id."""

    events: int
    link: str
    unkeyed: int = 0
    unsigned: int = 0  # seals without an Ed25519 signature while a signing key is set
    failure: tuple[int, str] | None = None
    at: str = ""
    ids: int = 0


Rows = list[tuple[int, str, int, str, bytes, "str | None", "str | None"]]


def _canonical_at(state: bytes) -> str | None:
    """The event's `at`, if `state` is exactly what the ledger writes for the event it holds: orjson's
    encoding of the parsed object (a repeated key, an escaped letter or other spacing give other
    bytes), laid out as `time_in` reads it (`type`, then `at`, near the start, no other `"at":`),
    so that every reader finds the same time; else None. One parse for every event of every walk."""
    try:
        event = orjson.loads(state)
    except orjson.JSONDecodeError:
        return None
    if type(event) is not dict:
        return None
    at = event.get("at")
    if type(at) is not str or type(event.get("type")) is not str or orjson.dumps(event) != state:
        return None
    keys = iter(event)
    if next(keys) != "type" or next(keys, None) != "at":
        return None
    # `at` is the second key, so this is its key, its text unescaped and followed by its closing quote.
    i = state.find(_AT_KEY, 0, 64) + len(_AT_KEY)
    value = at.encode()
    if i < len(_AT_KEY) or state[i : i + len(value) + 1] != value + b'"' or state.count(b'"at":') != 1:
        return None
    return at


_ID_KEY = b',"id":"'


def _walk(
    store: Store,
    c: Cursor,
    start: int,
    link: str,
    seal_at: dict[int, tuple[str, str | None]],
    key: bytes | None,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
    each_batch: Callable[[Rows], None] | None = None,
    at: str = "",
) -> _Walk:
    """Recompute the chain from position `start` (whose previous link is `link`, and previous time `at`)
    to `until` or the last stored event, comparing every link with the stored chain and the seals, and
    every time with the one before it and with the chain's copy. `each_batch` is given every batch of
    (position, stream, version, topic, state, link, at) rows once all of them matched."""
    w = _Walk(0, link)
    expected = start
    signed = signing.configured()
    ids = 0

    def failed(pos: int, problem: str) -> _Walk:
        w.link, w.failure, w.at, w.ids = link, (pos, problem), at, ids
        return w

    while True:
        rows = store.read_raw(c, expected, WALK_BATCH, until)
        if not rows:
            w.link, w.at, w.ids = link, at, ids
            return w
        for pos, oid, ver, topic, state, stored, stored_at in rows:
            if pos != expected:
                return failed(expected, f"position {expected} is missing from the log (deleted event)")
            link = next_link(link, pos, oid, ver, topic, state)
            if stored != link:
                if stored is None:
                    return failed(pos, f"position {pos} is not in the hash chain (inserted event)")
                return failed(
                    pos, f"position {pos} does not match its hash chain link (changed, inserted or reordered event)"
                )
            this_at = _canonical_at(state)
            if this_at is None:
                return failed(
                    pos,
                    f"position {pos} holds bytes the ledger does not write (not a canonical event: "
                    "a key given twice or escaped, or another layout, reads differently to "
                    "different readers)",
                )
            if this_at < at:
                return failed(
                    pos,
                    f"position {pos} is dated {this_at}, before position {pos - 1} ({at}): "
                    "time went backwards (backdated event)",
                )
            at = this_at
            if stored_at != at:
                return failed(
                    pos,
                    f"al_chain says position {pos} happened at {stored_at}, its event says {at} (derived data edited)",
                )
            if _ID_KEY in state and state.endswith(b'"}'):
                ids += 1
            if pos in seal_at:
                s_link, s_mac = seal_at[pos]
                if s_link != link:
                    return failed(pos, f"seal at position {pos} does not match the log")
                if s_mac is not None and signing.SEAL_SIG_PREFIX in s_mac or signed:
                    s_mac, s_sig = signing.split_seal(s_mac)
                    problem = signing.check_seal(pos, link, s_sig) if signed else None
                    if problem is not None and s_sig is None:
                        # Written before the signing key was set (or stripped: the HMAC key is what makes
                        # a stripped seal a failure): said in a note. A wrong signature is a failure.
                        w.unsigned += 1
                    elif problem is not None:
                        return failed(pos, problem)
                if s_mac is None:
                    if key is not None:
                        return failed(
                            pos,
                            f"seal at position {pos} has no HMAC, but {KEY_ENV} is set: the seal "
                            "was stripped, or written without the key",
                        )
                elif key is None:
                    w.unkeyed += 1
                elif not hmac.compare_digest(s_mac, seal_mac(pos, link, key) or ""):
                    return failed(pos, f"seal at position {pos} has a wrong HMAC (seal forged or key differs)")
            w.events += 1
            expected += 1
        if each_batch is not None:
            each_batch(rows)
        if progress is not None:
            progress(len(rows))


# From this many events on, `verify` walks segments of the log (of at least SEGMENT_MIN events) in
# parallel processes.
PARALLEL_FROM = 1_000_000
SEGMENT_MIN = 100_000


class Segments(Protocol):
    """What a parallel walk hands the rows it checked to (see `verify`'s `segments`). The object is
    pickled to each worker process, where `open` is called once per segment; the result of the
    segment's `close` comes back to `collect`, in this process, in the order segments finish."""

    def open(self, start: int, until: int, link: str) -> SegmentPart: ...

    def collect(self, start: int, until: int, result: Any) -> None: ...

    def discard(self) -> None: ...


class SegmentPart(Protocol):
    def take(self, rows: Rows) -> None: ...

    def close(self) -> Any: ...


def verify(
    store: Store,
    digest: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    each_batch: Callable[[Rows], None] | None = None,
    derived: bool = True,
    segments: Segments | None = None,
) -> VerifyResult:
    """Recompute the chain from the stored events and compare with the chain, seals, head and digest.

    Every position's link is kept, so the log can be checked in segments, each starting from the
    stored link before it: when every segment matches, the whole chain does. On a log of
    PARALLEL_FROM events or more, segments are walked in `workers` processes (default: one per
    core, at most 4). Any mismatch is then located again by one walk from the start, so the
    answer, and its message, is the same as a single walk's.

    `each_batch` makes it one walk in this process that hands over the rows it checked, batch by
    batch, in position order (up to the first mismatch): a caller that needs the log's bytes
    anyway, such as an evidence export, reads the log once. With `segments` too, the walk may
    still run in segments: each worker hands its segment's rows to its own `segments.open(...)`
    part, and every part's result reaches `segments.collect`. Should the segmented walk not match
    (or not run), `segments.discard()` is called and the single walk hands its rows to
    `each_batch`, from position 1, as without `segments`.

    With `derived` (the default), the side tables are then compared with what the events imply
    (see _derived_problems); without it, only the log, its chain, times, seals and head are checked.
    """
    key = seal_key()
    with store.transaction(write=False) as c:
        altered = store.altered_columns(c)
        if altered:
            return VerifyResult(
                False, 0, 0, GENESIS_LINK, 0, None, f"the ledger's schema was altered: {'; '.join(altered)}"
            )
        if store.postgres:
            # Checked on open and watched by writes only: a process that keeps the ledger open (the service,
            # whose export runs verify) would read through a function planted since (verify's own queries
            # call to_json and convert_from), so verify looks again.
            from ledger import schema
            from ledger.store import _POSTGRES_COLUMNS

            foreign = schema.postgres_problems(c, _POSTGRES_COLUMNS)
            if foreign:
                return VerifyResult(
                    False,
                    0,
                    0,
                    GENESIS_LINK,
                    0,
                    None,
                    f"the ledger's database holds what the ledger did not make: {'; '.join(foreign)}",
                )
        c.execute("SELECT position, at, link FROM al_head WHERE id = 1")
        row = c.fetchone()
        head_pos, head_at, head_link = (0, "", GENESIS_LINK) if row is None else row
        c.execute("SELECT position, link, mac FROM al_seals ORDER BY position")
        seals = c.fetchall()
        c.execute("SELECT MAX(position) FROM al_chain")
        chain_max = c.fetchone()[0] or 0

        def fail(pos: int | None, problem: str, events: int, link: str) -> VerifyResult:
            return VerifyResult(False, events, head_pos if type(head_pos) is int else 0, link, len(seals), pos, problem)

        # A position someone rewrote as text or a blob is named, not converted.
        if type(head_pos) is not int:
            return fail(None, f"al_head.position holds {head_pos!r:.40} where a position belongs", 0, GENESIS_LINK)
        wrong = next((p for p, _, _ in seals if type(p) is not int), None)
        if wrong is not None:
            return fail(None, f"al_seals holds the position {wrong!r:.40} where a position belongs", 0, GENESIS_LINK)
        if type(chain_max) is not int:
            return fail(None, "al_chain holds a position that is not a number", 0, GENESIS_LINK)
        seal_at = {p: (link, mac) for p, link, mac in seals}

        walk = None
        reported = 0

        def count(n: int) -> None:
            nonlocal reported
            reported += n
            if progress is not None:
                progress(n)

        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        if (
            (each_batch is None or segments is not None)
            and workers > 1
            and head_pos >= PARALLEL_FROM
            and store.max_position(c) == head_pos == chain_max
        ):
            walk = _walk_in_parallel(store, c, head_pos, seal_at, workers, count, segments)
        if walk is None or walk.failure is not None or walk.link != head_link:
            if segments is not None:
                segments.discard()
            if reported and progress is not None:
                progress(-reported)  # the walk starts over
            walk = _walk(store, c, 1, GENESIS_LINK, seal_at, key, progress=progress, each_batch=each_batch)
        events, link, unkeyed = walk.events, walk.link, walk.unkeyed
        if walk.failure is not None:
            return fail(walk.failure[0], walk.failure[1], events, link)
        last = events  # positions 1..last, each checked
        if last < head_pos or chain_max > last:
            return fail(
                last + 1,
                f"position {last + 1} is missing from the log (truncated tail; the head says {head_pos})",
                events,
                link,
            )
        if last > head_pos:
            return fail(
                head_pos + 1, f"position {head_pos + 1} is beyond the recorded head (inserted event)", events, link
            )
        if link != head_link:
            return fail(head_pos, "the head's link does not match the log", events, link)
        beyond = [p for p in seal_at if p > last]
        if beyond:
            return fail(
                last + 1,
                f"a seal exists at position {beyond[0]}, beyond the end of the log (truncated tail)",
                events,
                link,
            )
        if key is not None or signing.configured():
            # With a key (HMAC or signing), every SEAL_EVERY-th position and the head carry a keyed seal
            # (each write seals the head): one missing was deleted, or written by someone without the key.
            required = [*range(SEAL_EVERY, last + 1, SEAL_EVERY), *([last] if last else [])]
            missing = next((p for p in required if p not in seal_at), None)
            if missing is not None:
                env = KEY_ENV if key is not None else signing.SIGNING_ENV
                return fail(
                    missing,
                    f"no seal at position {missing}: with {env} set, every {SEAL_EVERY:,}th "
                    "position and the head are sealed (seal deleted, or events appended without "
                    "the key)",
                    events,
                    link,
                )
        derived_rows = _derived_problems(store, c, walk, head_at) if derived else []
    notes: list[str] = []
    if unkeyed:
        notes.append(f"{unkeyed} seal(s) carry an HMAC but {KEY_ENV} is not set: their keys were not checked")
    if walk.unsigned:
        notes.append(
            f"{walk.unsigned} seal(s) carry no Ed25519 signature although {signing.SIGNING_ENV} is set: "
            f"written before it was set, or stripped (with {KEY_ENV} set, a stripped seal's missing HMAC "
            "fails verify)"
        )
    if digest is not None:
        d_pos, d_link = int(digest["position"]), str(digest["link"])
        if d_pos > last:
            return VerifyResult(
                False,
                events,
                head_pos,
                link,
                len(seals),
                last + 1,
                f"the digest covers position {d_pos} but the log ends at {last} (truncated tail)",
                notes,
            )
        if signing.configured():
            key_now = signing.signing_key()
            problem = signing.check(signing.digest_message(digest), digest.get("signature"), key_now.public_key())
            if problem is not None:
                return VerifyResult(
                    False,
                    events,
                    head_pos,
                    link,
                    len(seals),
                    None,
                    f"the digest: {problem} ({signing.SIGNING_ENV} is set)",
                    notes,
                )
        d_actual = _link_at(store, d_pos)
        if d_actual != d_link:
            return VerifyResult(
                False,
                events,
                head_pos,
                link,
                len(seals),
                d_pos,
                f"position {d_pos} does not match the digest (the log was rewritten)",
                notes,
            )
        notes.append(f"digest at position {d_pos} matches")
    if derived_rows:
        return VerifyResult(
            False,
            events,
            head_pos,
            link,
            len(seals),
            None,
            f"the log is intact, but {len(derived_rows)} derived row(s) disagree with its events: {derived_rows[0]}",
            notes,
            derived_rows,
        )
    return VerifyResult(True, events, head_pos, link, len(seals), None, None, notes)


DERIVED_SHOWN = 20  # derived rows named at most, per table


def _derived_problems(store: Store, c: Cursor, walk: _Walk, head_at: str) -> list[str]:
    """The rows of the side tables that disagree with what the (verified) events imply.

    - al_head.at: the head event's time.
    - al_ids: exactly one row (id, position) per event that carries an id, each pointing at an event
      that carries it (counted and matched by the database).
    - al_entities, al_grants, al_members (the write model that decides what may be written): the
      change events are replayed through the same rules into a fresh model, and compared row by row.
    (al_chain's links and times and al_seals are checked by the walk itself.)
    """
    problems: list[str] = []
    if head_at != walk.at:
        problems.append(
            f"al_head says the newest event happened at {head_at or 'nothing'}, the event says {walk.at or 'nothing'}"
        )
    # al_ids is right when it has one row per event that carries an id, and each row's id is in the
    # event at its position (ids are unique, an event carries one): then the rows and the events
    # correspond one to one. Both counts are taken by the database.
    c.execute("SELECT count(*) FROM al_ids")
    count = c.fetchone()[0]
    wrong = store.ids_not_in_their_events(c)
    if count != walk.ids or wrong:
        detail = f"; e.g. id {wrong[0][0]!r} points at position {wrong[0][1]}, which does not carry it" if wrong else ""
        problems.append(
            f"al_ids holds {count:,} id row(s) for the {walk.ids:,} events that carry an id{detail} "
            "(rows deleted, added or pointed elsewhere: a re-import could skip or duplicate events)"
        )
    problems.extend(_write_model_problems(store, c))
    return problems


def _write_model_problems(store: Store, c: Cursor) -> list[str]:
    """Replay the change events through the rules into a scratch in-memory database, and compare its
    write model with the ledger's, row by row."""
    import sqlite3

    from ledger.app import TOPIC_PREFIX
    from ledger.events import USAGE_TYPES
    from ledger.model import WriteModel
    from ledger.store import side_table_ddl

    scratch = sqlite3.connect(":memory:")
    try:
        sc = Cursor(scratch.cursor(), False)
        for ddl in side_table_ddl(postgres=False):
            sc.execute(ddl)
        model = WriteModel(sc, empty=True)
        usage = [TOPIC_PREFIX + t for t in sorted(USAGE_TYPES)]
        for position, state in store.read_topics_excluding(1, store.max_position(c), usage):
            try:
                model.apply(orjson.loads(state))
            except Exception as exc:  # noqa: BLE001 - a verified event the rules refuse: say which
                return [f"the event at position {position} is refused by the ledger's rules on replay ({exc})"]
        model.flush()
        problems: list[str] = []
        for table, columns, key_len in (
            ("al_entities", "kind, name, status, ref, data", 2),
            ("al_grants", "role, principal, tenant, resource, expires_at", 4),
            ("al_members", "team, member", 2),
        ):
            sql = f"SELECT {columns} FROM {table}"
            expected = _keyed(scratch.execute(sql).fetchall(), key_len)
            c.execute(sql)
            problems += _compare(table, expected, _keyed(c.fetchall(), key_len))
        return problems
    finally:
        scratch.close()


def _keyed(rows: list[Any], key_len: int) -> dict[Any, Any]:
    """{primary key: the other columns} with JSON text parsed (so key order does not matter) and
    empty text and NULL told apart by nothing."""
    out = {}
    for row in rows:
        values = []
        for v in tuple(row)[key_len:]:
            if isinstance(v, str) and v.startswith("{"):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            values.append(v if v != "" else None)
        out[tuple(row)[:key_len]] = tuple(values)
    return out


def _compare(table: str, expected: dict[Any, Any], stored: dict[Any, Any]) -> list[str]:
    out = []
    for key in sorted(set(expected) | set(stored), key=repr):
        if key not in stored:
            out.append(f"{table} lacks the row {key!r} that the events imply")
        elif key not in expected:
            out.append(f"{table} row {key!r} is not implied by the events")
        elif expected[key] != stored[key]:
            out.append(f"{table} row {key!r} holds {stored[key]!r}; the events imply {expected[key]!r}")
        if len(out) >= DERIVED_SHOWN:
            break
    return out


def _walk_in_parallel(
    store: Store,
    c: Cursor,
    head: int,
    seal_at: dict[int, tuple[str, str | None]],
    workers: int,
    progress: Callable[[int], None] | None,
    segments: Segments | None = None,
) -> _Walk | None:
    """Walk positions 1..head in segments in worker processes (handing each segment's rows to a part of
    `segments`, if given). None if that cannot be done here (an in-memory store, or a stored link
    missing at a segment's start: the single walk then decides)."""
    if store.url == ":memory:" or store.url.startswith("file:"):
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ledger.pipeline import bound_to

    size = max(SEGMENT_MIN, -(-head // (workers * 4)))
    starts = list(range(1, head + 1, size))
    jobs = []
    for a in starts:
        b = min(head, a + size - 1)
        if a == 1:
            link, at = GENESIS_LINK, ""
        else:
            # The segment before ends there: its walk checks this link and time against the log.
            c.execute("SELECT link FROM al_chain WHERE position = ?", (a - 1,))
            row = c.fetchone()
            at = store.time_at(c, a - 1)
            if row is None or at is None:
                return None
            link = row[0]
        jobs.append((a, b, link, {p: v for p, v in seal_at.items() if a <= p <= b}, at))
    # Each worker reads the log in a transaction of its own: the link and time a segment ends with must be
    # the ones the next segment starts from, as read here, or segments read in different states of an
    # edited log could each match.
    ends = {a: (link, at) for (a, *_), (_, _, link, _, at) in zip(jobs, jobs[1:])}
    walks: dict[int, _Walk] = {}
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=bound_to,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {
                pool.submit(_walk_segment, store.url, a, b, link, seals, at, segments, os.getpid()): (a, b)
                for a, b, link, seals, at in jobs
            }
            for future in as_completed(futures):
                a, b = futures[future]
                w, part = future.result()
                if w.failure is None and w.events != b - a + 1:
                    w.failure = (a + w.events, "short segment")  # rows missing: the single walk names them
                if w.failure is None and a in ends and (w.link, w.at) != ends[a]:
                    w.failure = (
                        b,
                        f"position {b} reads differently in two transactions (the log changed while it was verified)",
                    )  # the single walk, in one transaction, decides
                walks[a] = w
                if w.failure is not None:
                    for f in futures:
                        f.cancel()
                    return w
                if segments is not None:
                    try:
                        segments.collect(a, b, part)
                    except Exception:
                        for f in futures:
                            f.cancel()
                        raise
                if progress is not None:
                    progress(w.events)
    except Exception:  # noqa: BLE001 - workers that cannot start or read: the single walk decides
        return None
    last = walks[starts[-1]]
    return _Walk(
        head,
        last.link,
        sum(w.unkeyed for w in walks.values()),
        at=last.at,
        ids=sum(w.ids for w in walks.values()),
        unsigned=sum(w.unsigned for w in walks.values()),
    )


def _walk_segment(
    url: str,
    start: int,
    until: int,
    link: str,
    seal_at: dict[int, tuple[str, str | None]],
    at: str,
    segments: Segments | None = None,
    parent: int | None = None,
) -> tuple[_Walk, Any]:
    """Worker process: walk one segment of the log at `url`; (the walk, the result of its part of
    `segments`, if given). A worker whose parent (the process `parent`) is gone stops at once, or at its
    next batch (where the kernel does not end it: see ledger.pipeline.bound_to)."""
    parent = os.getppid() if parent is None else parent

    def orphaned() -> None:
        if os.getppid() != parent:
            os._exit(1)

    orphaned()
    part = segments.open(start, until, link) if segments is not None else None

    def each_batch(rows: Rows) -> None:
        orphaned()
        if part is not None:
            part.take(rows)

    store = Store(url)
    try:
        with store.transaction(write=False) as c:
            walk = _walk(store, c, start, link, seal_at, seal_key(), until, each_batch=each_batch, at=at)
    except BaseException:
        if part is not None:
            part.close()
        raise
    finally:
        store.close()
    return walk, part.close() if part is not None else None


def _link_at(store: Store, position: int) -> str:
    if position == 0:
        return GENESIS_LINK
    with store.transaction(write=False) as c:
        c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
        row = c.fetchone()
    return "" if row is None else row[0]


def make_digest(store: Store, generated_at: str) -> dict[str, Any]:
    pos, at, link = store.head()
    return signing.sign_digest(
        {
            "ledger": "access-ledger",
            "position": pos,
            "at": at or None,
            "link": link,
            "mac": seal_mac(pos, link, seal_key()),
            "generated_at": generated_at,
        }
    )


def read_digest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"digest: no file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ValidationError(f"digest: {path} is not a digest file (JSON)") from None
    if not isinstance(data, dict) or not isinstance(data.get("position"), int) or not isinstance(data.get("link"), str):
        raise ValidationError(f"digest: {path} has no position and link")
    return data
