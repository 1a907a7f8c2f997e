"""AccessLedger: the application. One method per command; every write is one atomic transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ledger import errors as E
from ledger.events import USAGE_TYPES, decode, encode, parse_json, parse_obj
from ledger.integrity import SEAL_EVERY, Segments, VerifyResult, make_digest, next_link, verify, write_seal
from ledger.model import WriteModel
from ledger.store import Cursor, Snapshots, Store, stream_id, usage_stream
from ledger.timeutil import canonical, format_instant, now

TOPIC_PREFIX = "ledger.events:"
BATCH = 5000  # events between flushes of an import (and per idempotency lookup)
STREAM_CACHE = 200_000  # stream versions remembered by one write
FUTURE_SLACK = timedelta(minutes=5)
AUTO_AT = "\0auto_at"


@dataclass
class WriteResult:
    written: int
    skipped: int
    first: int | None
    last: int | None
    head: tuple[int, str] | None = None  # (position, link) of the head this write left, as it committed it


class AccessLedger:
    """An access-control ledger stored in SQLite or PostgreSQL."""

    def __init__(self, store: Store):
        self.store = store
        self.snapshots = Snapshots(store)

    @classmethod
    def open(cls, url: str, *, create: bool = False) -> AccessLedger:
        """Open the ledger at a SQLite path (or ':memory:') or a postgresql:// URL."""
        return cls(Store(url, create=create))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> AccessLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------

    def head(self) -> int:
        return self.store.head()[0]

    def newest_at(self) -> str | None:
        return self.store.head()[1] or None

    def read(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(position, event) in position order, start and stop inclusive."""
        for pos, state in self.store.read(start, stop):
            yield pos, decode(state)

    def read_bytes(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.store.read(start, stop)

    def read_changes(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """Like read(), leaving out usage events (they change no permission)."""
        for pos, state in self.read_changes_raw(start, stop):
            yield pos, decode(state)

    def read_changes_raw(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, canonical bytes) of the events that are not usage events."""
        last = self.head() if stop is None else stop
        topics = [TOPIC_PREFIX + t for t in sorted(USAGE_TYPES)]
        return self.store.read_topics_excluding(start, last, topics)

    def position_at(self, at: str) -> int:
        """Newest position whose event time is <= at."""
        return self.store.position_at(canonical(at))

    def positions_between(self, start: str | None, stop: str | None) -> tuple[int, int]:
        """First and last positions of events with start <= at <= stop (first > last when none)."""
        first = 1 if start is None else self._first_at_or_after(canonical(start, "from"))
        last = self.head() if stop is None else self.store.position_at(canonical(stop, "to"))
        return first, last

    def _first_at_or_after(self, at: str) -> int:
        return self.store.first_position_from(at)

    def time_of(self, position: int) -> str | None:
        return self.store.time_of(position)

    @property
    def preset(self) -> str:
        with self.store.transaction(write=False) as c:
            c.execute("SELECT data FROM al_entities WHERE kind = 'organization'")
            row = c.fetchone()
        if row is None:
            raise E.NotInitialized("the ledger has no organization yet: run `access-ledger init` first")
        import json

        return json.loads(row[0])["preset"]

    @property
    def enforces_authority(self) -> bool:
        """True if the ledger was created with --enforce-authority (its first event says so)."""
        import json

        with self.store.transaction(write=False) as c:
            c.execute("SELECT data FROM al_entities WHERE kind = 'organization'")
            row = c.fetchone()
        return row is not None and json.loads(row[0]).get("enforce_authority") is True

    def entities(self, kind: str) -> list[dict[str, Any]]:
        """Current entities of one kind (role, user, tenant, ...) from the write model."""
        import json

        with self.store.transaction(write=False) as c:
            c.execute("SELECT name, status, ref, data FROM al_entities WHERE kind = ? ORDER BY name", (kind,))
            return [{"name": n, "status": s, "ref": r, **json.loads(d)} for n, s, r, d in c.fetchall()]

    def grants(self, role: str | None = None) -> list[dict[str, Any]]:
        """Assignments currently held (expired ones included until unassigned)."""
        sql = "SELECT role, principal, tenant, resource, expires_at FROM al_grants"
        params: tuple[Any, ...] = ()
        if role is not None:
            sql += " WHERE role = ?"
            params = (role,)
        with self.store.transaction(write=False) as c:
            c.execute(sql + " ORDER BY role, principal, tenant, resource", params)
            return [
                {"role": r, "principal": p, "tenant": t or None, "resource": res or None, "expires_at": x}
                for r, p, t, res, x in c.fetchall()
            ]

    def count(self) -> int:
        return self.store.count()

    # -- writing -------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> int:
        """Validate one event (its `at` defaults to now) and record it; return its position."""
        canonical_event = _stamped(event)
        result = self._write([[(0, canonical_event)]])
        if result.last is None:
            # The idempotency id was already recorded with this very event.
            return self._position_of_id(canonical_event["id"])
        return result.last

    def append_many(
        self,
        events: Iterable[dict[str, Any]],
        *,
        enforce_authority: bool = False,
        lines: list[int] | None = None,
    ) -> WriteResult:
        """Validate events (each `at` defaulting to now) and record them in one transaction: all or none.
        With `enforce_authority` each change is held to the authority rules (DESIGN section 3) whatever the
        ledger says; with `lines` (one number per event) a refusal names the event's ("line N")."""
        return self._write([stamped_chunk(events, lines)], enforce_authority=enforce_authority)

    def write_chunk(self, chunk: list[tuple[int, dict[str, Any]]], *, enforce_authority: bool = False) -> WriteResult:
        """Record events given as stamped_chunk makes them, in one transaction: all or none."""
        return self._write([chunk], enforce_authority=enforce_authority)

    def import_lines(
        self, lines: Iterable[bytes | str], progress: Callable[[int], None] | None = None, workers: int = 0
    ) -> WriteResult:
        """Import JSONL lines atomically: all of them or, at the first bad line, none.

        With workers > 0, lines are parsed in that many worker processes beside the writer
        (worth it from some ten thousand lines on).
        """
        import gc

        def parsed() -> Iterator[list[tuple[int, dict[str, Any]]]]:
            chunk: list[tuple[int, dict[str, Any]]] = []
            for n, line in enumerate(lines, 1):
                if progress is not None:
                    progress(len(line) + 1)
                if not line.strip():
                    continue
                try:
                    chunk.append((n, parse_json(line)))
                except E.LedgerError as exc:
                    if chunk:
                        yield chunk
                    raise type(exc)(f"line {n}: {exc}") from None
                if len(chunk) >= BATCH:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        if workers > 0:
            from ledger.pipeline import parse_parallel

            source = parse_parallel(lines, progress, workers)
        else:
            source = parsed()
        # A bulk import allocates millions of short-lived objects and no cycles: the cyclic
        # collector would only rescan the growing caches again and again.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._write(source)
        finally:
            if enabled:
                gc.enable()

    def _position_of_id(self, event_id: str) -> int:
        with self.store.transaction(write=False) as c:
            c.execute("SELECT position FROM al_ids WHERE event_id = ?", (event_id,))
            return int(c.fetchone()[0])

    def _write(
        self, chunks: Iterable[list[tuple[int, dict[str, Any]]]], *, enforce_authority: bool = False
    ) -> WriteResult:
        """Check and record events, given in chunks of (line number or 0, canonical event)."""
        store = self.store
        latest = format_instant(now() + FUTURE_SLACK)
        with store.transaction(write=True) as c:
            pos, last_at, link = store.lock_head(c)
            first = pos + 1
            # Into an empty ledger (checked above: no stored event beyond the head) nothing is
            # stored yet, so whatever the model and the streams have not seen does not exist.
            empty = first == 1
            model = WriteModel(
                c,
                empty=empty,
                enforce_authority=enforce_authority,
                # Only what was stored before this write: a cause within it is the audits' to flag.
                stored=lambda ps: store.states_at(c, [p for p in ps if p < first]),
            )
            rows: list[tuple[int, str, int, str, bytes]] = []
            chain: list[tuple[int, str, str]] = []
            ids: list[tuple[str, int]] = []
            # Ids of this import's events that the next look-up cannot see yet: those of the chunk
            # being checked, and those handed to the writer after the last look-up.
            pending_ids: dict[str, bytes] = {}
            handed_ids: dict[str, bytes] = {}
            handoff: tuple[list[Any], ...] = ([], [], [])
            versions: dict[str, int] = {}
            streams_complete = empty  # versions holds every stream there is
            skipped = 0
            usage_types = USAGE_TYPES
            writer = store.bulk_writer(c)

            def before_lookup() -> None:
                # The rules' state and the seals first (they are small); the rows wait for after_lookup.
                nonlocal rows, chain, ids, pending_ids, handed_ids, handoff, streams_complete
                model.flush()
                if chain:
                    start = chain[0][0]
                    for p in range(start + (-start) % SEAL_EVERY, chain[-1][0] + 1, SEAL_EVERY):
                        write_seal(c, p, chain[p - start][2], format_instant(now()))
                # Everything handed over before is visible to the look-up that follows (the cursor
                # waits for the writer); this chunk's rows are not, so their ids stay in memory.
                handoff, rows, chain, ids = (rows, chain, ids), [], [], []
                handed_ids, pending_ids = pending_ids, {}
                if len(versions) > STREAM_CACHE:
                    # Bounded memory; a version asked for later is read from the table, after the writer.
                    versions.clear()
                    streams_complete = False

            def after_lookup() -> None:
                # On PostgreSQL the rows are written while the next chunk is checked.
                writer.submit(_write_rows, store, *handoff)

            def flush() -> None:
                before_lookup()
                after_lookup()
                writer.wait()

            try:
                for chunk, known in _with_known_ids(c, store, chunks, before_lookup, after_lookup):
                    model.prefetch(chunk)
                    for lineno, ev in chunk:
                        try:
                            state = _admitted(ev, last_at, latest, pending_ids, handed_ids, known)
                            if state is None:
                                skipped += 1
                                continue
                            at, event_id = ev["at"], ev.get("id")
                            etype = ev["type"]
                            key = model.apply(ev)
                            pos += 1
                            if etype in usage_types:
                                oid, version = usage_stream(pos), 1
                            else:
                                oid = stream_id(key).hex
                                version = _next_version(c, store, versions, oid, streams_complete)
                            topic = TOPIC_PREFIX + etype
                            link = next_link(link, pos, oid, version, topic, state)
                            rows.append((pos, oid, version, topic, state))
                            chain.append((pos, at, link))
                            if event_id is not None:
                                ids.append((event_id, pos))
                                pending_ids[event_id] = state
                            last_at = at
                        except E.LedgerError as exc:
                            if lineno:
                                raise type(exc)(f"line {lineno}: {_with_field(str(exc), ev)}") from None
                            raise
                flush()
            finally:
                writer.close()
            if pos >= first:
                write_seal(c, pos, link, format_instant(now()))
                c.execute("UPDATE al_head SET position = ?, at = ?, link = ? WHERE id = 1", (pos, last_at, link))
        return WriteResult(
            pos - first + 1, skipped, first if pos >= first else None, pos if pos >= first else None, (pos, link)
        )

    # -- export, integrity ---------------------------------------------------------------

    def export_lines(self, start: str | None = None, stop: str | None = None) -> Iterator[bytes]:
        """The events with start <= at <= stop as JSONL lines (bytes, newline-terminated)."""
        first, last = self.positions_between(start, stop)
        if first > last:
            return
        for _, state in self.store.read(first, last):
            yield state + b"\n"

    def verify(
        self,
        digest: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
        each_batch: Callable[[list[tuple[Any, ...]]], None] | None = None,
        derived: bool = True,
        segments: Segments | None = None,
    ) -> VerifyResult:
        """Check the hash chain, seals, times and head (and the digest, if given), and with `derived` that the
        side tables agree with the events; `workers` processes for a large log (default: one per core, at
        most 4). `each_batch` and `segments`: see ledger.integrity.verify."""
        return verify(self.store, digest, progress, workers, each_batch, derived, segments)

    def digest(self) -> dict[str, Any]:
        return make_digest(self.store, format_instant(now()))

    # -- commands ------------------------------------------------------------------------

    def _cmd(self, etype: str, actor: str, reason: str | None, at: str | None, id: str | None, **fields: Any) -> int:
        event: dict[str, Any] = {"type": etype, "at": at, "actor": actor}
        event.update({k: v for k, v in fields.items() if v is not None})
        if reason:
            event["reason"] = reason
        if id:
            event["id"] = id
        return self.append(event)

    def init(
        self,
        org: str = "default",
        preset: str = "zenml-pro",
        *,
        enforce_authority: bool = False,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        """Create the organization; with enforce_authority, every later change is judged by its actor's permissions."""
        return self._cmd(
            "OrganizationCreated",
            actor,
            reason,
            at,
            id,
            name=org,
            preset=preset,
            enforce_authority=True if enforce_authority else None,
        )

    def create_tenant(
        self,
        tenant: str,
        display_name: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TenantCreated", actor, reason, at, id, tenant=tenant, display_name=display_name)

    def rename_tenant(
        self,
        tenant: str,
        display_name: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TenantRenamed", actor, reason, at, id, tenant=tenant, display_name=display_name)

    def delete_tenant(
        self,
        tenant: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TenantDeleted", actor, reason, at, id, tenant=tenant)

    def create_user(
        self,
        user: str,
        email: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("UserCreated", actor, reason, at, id, user=user, email=email)

    def deactivate_user(
        self,
        user: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("UserDeactivated", actor, reason, at, id, user=user)

    def reactivate_user(
        self,
        user: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("UserReactivated", actor, reason, at, id, user=user)

    def create_service_account(
        self,
        name: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("ServiceAccountCreated", actor, reason, at, id, service_account=name)

    def deactivate_service_account(
        self,
        name: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("ServiceAccountDeactivated", actor, reason, at, id, service_account=name)

    def reactivate_service_account(
        self,
        name: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("ServiceAccountReactivated", actor, reason, at, id, service_account=name)

    def create_team(
        self,
        team: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TeamCreated", actor, reason, at, id, team=team)

    def delete_team(
        self,
        team: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TeamDeleted", actor, reason, at, id, team=team)

    def add_team_member(
        self,
        team: str,
        member: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TeamMemberAdded", actor, reason, at, id, team=team, member=member)

    def remove_team_member(
        self,
        team: str,
        member: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("TeamMemberRemoved", actor, reason, at, id, team=team, member=member)

    def create_role(
        self,
        role: str,
        scope: str,
        permissions: Iterable[str],
        base: str | None = None,
        description: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "RoleCreated",
            actor,
            reason,
            at,
            id,
            role=role,
            scope=scope,
            base=base,
            permissions=list(permissions),
            description=description,
        )

    def change_role(
        self,
        role: str,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("RolePermissionsChanged", actor, reason, at, id, role=role, add=list(add), remove=list(remove))

    def delete_role(
        self,
        role: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("RoleDeleted", actor, reason, at, id, role=role)

    def assign_role(
        self,
        role: str,
        principal: str,
        tenant: str | None = None,
        resource: str | None = None,
        expires_at: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "RoleAssigned",
            actor,
            reason,
            at,
            id,
            role=role,
            principal=principal,
            tenant=tenant,
            resource=resource,
            expires_at=expires_at,
        )

    def unassign_role(
        self,
        role: str,
        principal: str,
        tenant: str | None = None,
        resource: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "RoleUnassigned", actor, reason, at, id, role=role, principal=principal, tenant=tenant, resource=resource
        )

    def register_connector(
        self,
        connector: str,
        tenant: str,
        connector_type: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "ConnectorRegistered",
            actor,
            reason,
            at,
            id,
            connector=connector,
            tenant=tenant,
            connector_type=connector_type,
        )

    def delete_connector(
        self,
        connector: str,
        tenant: str,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd("ConnectorDeleted", actor, reason, at, id, connector=connector, tenant=tenant)

    def record_connector_access(
        self,
        connector: str,
        tenant: str,
        principal: str,
        outcome: str,
        context: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "ConnectorSecretAccessed",
            actor,
            reason,
            at,
            id,
            connector=connector,
            tenant=tenant,
            principal=principal,
            outcome=outcome,
            context=context,
        )

    def record_access(
        self,
        principal: str,
        action: str,
        resource: str,
        outcome: str,
        tenant: str | None = None,
        *,
        actor: str = "system",
        reason: str | None = None,
        at: str | None = None,
        id: str | None = None,
    ) -> int:
        return self._cmd(
            "ResourceAccessed",
            actor,
            reason,
            at,
            id,
            principal=principal,
            tenant=tenant,
            resource=resource,
            action=action,
            outcome=outcome,
        )


def stamped_chunk(events: Iterable[dict[str, Any]], lines: list[int] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number or 0, the event validated and canonical, its `at` defaulting to now), as a write takes them;
    `lines`: one number per event, so that a refusal names the event's line."""
    return [(lines[i] if lines else 0, _stamped(event)) for i, event in enumerate(events)]


def _stamped(event: dict[str, Any]) -> dict[str, Any]:
    """The event validated, in canonical form; without an `at`, dated now and marked to be stamped again."""
    event = dict(event)
    auto_at = event.get("at") is None
    if auto_at:
        event["at"] = format_instant(now())
    canonical_event = parse_obj(event)
    if auto_at:
        # Stamped again under the write lock, so concurrent writers never refuse each other.
        canonical_event[AUTO_AT] = True
    return canonical_event


def _with_known_ids(
    c: Any,
    store: Store,
    chunks: Iterable[list[tuple[int, dict[str, Any]]]],
    before_lookup: Callable[[], None],
    after_lookup: Callable[[], None],
    size: int | None = None,
) -> Iterator[tuple[list[tuple[int, dict[str, Any]]], dict[str, tuple[int, bytes]]]]:
    """Pass events through in chunks of about `size`, each with the already-recorded ids among them."""

    def lookup(buffer: list[tuple[int, dict[str, Any]]]) -> dict[str, tuple[int, bytes]]:
        before_lookup()
        found = store.known_ids(c, list({ev["id"] for _, ev in buffer if "id" in ev}))
        after_lookup()
        return found

    size = size or BATCH
    deferred: E.LedgerError | None = None
    buffer: list[tuple[int, dict[str, Any]]] = []
    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            break
        except E.LedgerError as exc:
            # A later line failed to parse: the lines before it are checked first, so the
            # error reported is always the first bad line's.
            deferred = exc
            break
        buffer = buffer + chunk if buffer else chunk
        if len(buffer) >= size:
            yield buffer, lookup(buffer)
            buffer = []
    if buffer:
        yield buffer, lookup(buffer)
    if deferred is not None:
        raise deferred


def _write_rows(c: Any, store: Store, rows: list[Any], chain: list[Any], ids: list[Any]) -> None:
    """One chunk's rows: the events, their chain links and their ids."""
    store.insert_events(c, rows)
    store.insert_rows(c, "al_chain", ("position", "at", "link"), chain)
    store.insert_rows(c, "al_ids", ("event_id", "position"), ids)


def _next_version(c: Cursor, store: Store, versions: dict[str, int], oid: str, complete: bool) -> int:
    """The stream's next version, counted in `versions` (looked up in the store once, unless the write started
    from an empty ledger: `complete`, every stream is then in `versions`)."""
    version = versions.get(oid)
    if version is None:
        version = 0 if complete else store.stream_version(c, oid)
    versions[oid] = version + 1
    return version + 1


def _admitted(
    ev: dict[str, Any],
    last_at: str,
    latest: str,
    pending: dict[str, bytes],
    handed: dict[str, bytes],
    known: dict[str, tuple[int, bytes]],
) -> bytes | None:
    """The stored bytes of `ev`, its `at` set (an event appended without one) and checked against the ledger's
    order in time; None if its id is recorded already with these bytes (IdConflict if with others)."""
    if ev.pop(AUTO_AT, False):  # only an event appended without an `at` has it
        ev["at"] = max(format_instant(now()), last_at)
    state = ev.pop("\0state", None) or encode(ev)
    event_id = ev.get("id")
    if (
        event_id is not None
        and (event_id in pending or event_id in handed or event_id in known)
        and _seen_id(event_id, state, pending, handed, known)
    ):
        return None
    at = ev["at"]
    if at < last_at:
        raise E.OutOfOrder(
            f"at: {at} is before the ledger's newest event ({last_at}); the ledger is append-only in time"
        )
    if at > latest:
        raise E.OutOfOrder(f"at: {at} is more than five minutes in the future")
    return state


def _seen_id(
    event_id: str,
    state: bytes,
    pending: dict[str, bytes],
    handed: dict[str, bytes],
    known: dict[str, tuple[int, bytes]],
) -> bool:
    """True if the id is already recorded with this event; IdConflict if with another."""
    for this_import in (pending, handed):
        if event_id in this_import:
            if this_import[event_id] == state:
                return True
            raise E.IdConflict(f"id: {event_id!r} is already used by a different event in this import")
    if event_id not in known:
        return False
    position, stored = known[event_id]
    if stored == state:
        return True
    raise E.IdConflict(f"id: {event_id!r} is already used by a different event (position {position})")


def _with_field(message: str, ev: dict[str, Any]) -> str:
    """Prefix a rule's message with the event field it is about, when that can be told."""
    if ": " in message.split(" ", 1)[0] or message.split(":", 1)[0] in ev or message.startswith(("at:", "id:")):
        return message
    for name, value in ev.items():
        if name in ("type", "at", "actor", "reason", "id") or not isinstance(value, str):
            continue
        short = value.split(":", 1)[1] if name in ("principal", "member") and ":" in value else value
        if repr(value) in message or repr(short) in message or value in message.split(" "):
            return f"{name}: {message}"
    return message
