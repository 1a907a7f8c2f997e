"""Storage: eventsourcing's event store (SQLite or PostgreSQL) plus the ledger's side tables.

Events live in eventsourcing's `stored_events` table, one stream per entity, and are read
back as its notification log. Beside it, in the same database and written in the same
transaction, the ledger keeps: the head (newest position, its time and chain link; the row
every writer locks first, so writes are serialised and position order is time order), the
hash chain, seals, idempotency ids, the indexed write model used to validate commands, and
snapshot blobs for projections.

Positions are assigned by the ledger (head + 1, ...) so they are dense on both backends.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlparse

from ledger.errors import ConcurrentWrite, IntegrityFailure, StorageError

NAMESPACE = uuid.UUID("6f1f5c0e-3b7a-5d2e-9a41-0c6a1ed9e7b2")
GENESIS_LINK = "0" * 64

_SIDE_TABLES = [
    """CREATE TABLE IF NOT EXISTS al_head (
        id INTEGER PRIMARY KEY, position BIGINT NOT NULL, at TEXT NOT NULL, link TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS al_chain (
        position {pos_key} PRIMARY KEY, at TEXT NOT NULL, link TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS al_seals (
        position BIGINT PRIMARY KEY, link TEXT NOT NULL, mac TEXT, sealed_at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS al_ids (event_id TEXT PRIMARY KEY, position BIGINT NOT NULL){keyed}",
    """CREATE TABLE IF NOT EXISTS al_entities (
        kind TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, ref TEXT,
        data TEXT NOT NULL, PRIMARY KEY (kind, name))""",
    "CREATE INDEX IF NOT EXISTS al_entities_ref ON al_entities (kind, ref)",
    "CREATE TABLE IF NOT EXISTS al_members (team TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (team, member))",
    """CREATE TABLE IF NOT EXISTS al_grants (
        role TEXT NOT NULL, principal TEXT NOT NULL, tenant TEXT NOT NULL, resource TEXT NOT NULL,
        expires_at TEXT, PRIMARY KEY (role, principal, tenant, resource))""",
    "CREATE INDEX IF NOT EXISTS al_grants_principal ON al_grants (principal)",
    "CREATE TABLE IF NOT EXISTS al_snapshots (name TEXT PRIMARY KEY, position BIGINT NOT NULL, data {blob} NOT NULL)",
    # What each DuckDB warehouse file held after its last sync (see reports/warehouse.py).
    """CREATE TABLE IF NOT EXISTS al_warehouses (
        id TEXT PRIMARY KEY, position BIGINT NOT NULL, link TEXT NOT NULL, sha256 TEXT NOT NULL, mac TEXT)""",
]

# In SQLite an INTEGER PRIMARY KEY is the rowid itself, so the chain is one B-tree, not a table
# plus an index; and the ids, keyed by text, are stored in their key's B-tree (WITHOUT ROWID).
_SQLITE_TYPES = {"blob": "BLOB", "pos_key": "INTEGER", "keyed": " WITHOUT ROWID"}
_POSTGRES_TYPES = {"blob": "BYTEA", "pos_key": "BIGINT", "keyed": ""}


# Every column's type as the ledger creates it on PostgreSQL (verify names any that differs).
_T, _B = "text", "bigint"
_POSTGRES_COLUMNS: dict[str, dict[str, str]] = {
    "stored_events": {
        "originator_id": "uuid",
        "originator_version": _B,
        "topic": _T,
        "state": "bytea",
        "notification_id": _B,
    },
    "al_head": {"id": "integer", "position": _B, "at": _T, "link": _T},
    "al_chain": {"position": _B, "at": _T, "link": _T},
    "al_seals": {"position": _B, "link": _T, "mac": _T, "sealed_at": _T},
    "al_ids": {"event_id": _T, "position": _B},
    "al_entities": {"kind": _T, "name": _T, "status": _T, "ref": _T, "data": _T},
    "al_members": {"team": _T, "member": _T},
    "al_grants": {"role": _T, "principal": _T, "tenant": _T, "resource": _T, "expires_at": _T},
    "al_snapshots": {"name": _T, "position": _B, "data": "bytea"},
    "al_warehouses": {"id": _T, "position": _B, "link": _T, "sha256": _T, "mac": _T},
}


def side_table_ddl(*, postgres: bool) -> list[str]:
    """The statements that create the ledger's side tables on one backend."""
    return [ddl.format(**(_POSTGRES_TYPES if postgres else _SQLITE_TYPES)) for ddl in _SIDE_TABLES]


def stream_id(key: str) -> uuid.UUID:
    """The stream (originator id) of an entity, from its natural key: `role/editor`, `user/alice`."""
    return uuid.uuid5(NAMESPACE, key)


_USAGE_PREFIX_HEX = NAMESPACE.hex[:16]


def usage_stream(position: int) -> str:
    """The stream (hex) of a usage event: one stream per event, named after its position.

    Cheaper than uuid5 and as unique: the namespace's first 64 bits, then the position.
    """
    return f"{_USAGE_PREFIX_HEX}{position:016x}"


class Row(NamedTuple):
    """One stored event ready to append: its position, stream (uuid hex), version, topic and canonical bytes."""

    position: int
    originator_hex: str
    version: int
    topic: str
    state: bytes


def parse_url(url: str) -> dict[str, str]:
    """Turn `--db` into eventsourcing's environment (PERSISTENCE_MODULE and its settings)."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlparse(url)
        query = parse_qs(parts.query)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "localhost",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or os.environ.get("PGUSER", "postgres")),
            "POSTGRES_PASSWORD": unquote(parts.password or os.environ.get("PGPASSWORD", "")),
            "POSTGRES_SCHEMA": query.get("schema", ["public"])[0],
            "POSTGRES_LOCK_TIMEOUT": "30",
            # eventsourcing ends a session idle inside a transaction after 5 s by default. An import
            # holds its one transaction open while the parser works ahead (or while `import -` waits
            # for its input), longer than that on a busy machine; a client that dies is still seen at
            # once (its connection closes), so only a live but stalled one is bounded, at 30 minutes.
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "1800",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_POOL_SIZE": "2",
            "CREATE_TABLE": "true",
        }
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", env["POSTGRES_SCHEMA"]):
            raise StorageError(f"db: schema {env['POSTGRES_SCHEMA']!r} is not a plain SQL identifier")
        return env
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if path == ":memory:":
        path = f"file:access-ledger-{uuid.uuid4().hex}?mode=memory&cache=shared"
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": "30",
        "CREATE_TABLE": "true",
    }


class Cursor:
    """A cursor that takes `?` placeholders on both backends."""

    def __init__(self, raw: Any, postgres: bool):
        self.raw = raw
        self.postgres = postgres
        self.before: Callable[[], None] | None = None  # run before each statement (see BulkWriter)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.before is not None:
            self.before()
        self.raw.execute(self._sql(sql), params)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.before is not None:
            self.before()
        if rows:
            self.raw.executemany(self._sql(sql), rows)

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return self.raw.fetchall()

    def blob_start(self, table: str, column: str, rowid: int, size: int) -> bytes:
        """The first `size` bytes of a SQLite blob, read without reading the rest of it."""
        with self.raw.sqlite_cursor.connection.blobopen(table, column, rowid, readonly=True) as blob:
            return blob.read(size)


class BulkWriter:
    """Writes an import's rows beside the checking of the next chunk, in the same transaction.

    On PostgreSQL the rows go through a second cursor of the write transaction's connection, in a
    thread that waits on the server while the importer goes on checking events (the server's work
    for a chunk is about half the importer's). The importer's own cursor waits for the writer
    before each of its statements, so every read sees every row handed over before it, and the
    transaction's order of statements is that of a plain, one-thread import. On SQLite (all of it
    in this process) the rows are written at once.
    """

    def __init__(self, store: Store, c: Cursor):
        self.main = c
        self.future: Any = None
        self.pool: Any = None
        self.cursor = c
        if store.postgres:
            from concurrent.futures import ThreadPoolExecutor

            self.cursor = Cursor(c.raw.connection.cursor(), True)
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="access-ledger-writer")
            c.before = self.wait

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(cursor, *args): in the writer's thread, once what was submitted before is written."""
        self.wait()
        if self.pool is None:
            fn(self.cursor, *args)
        else:
            self.future = self.pool.submit(fn, self.cursor, *args)

    def wait(self) -> None:
        """Until what was submitted is written; its error, if any, is raised here."""
        future, self.future = self.future, None
        if future is not None:
            future.result()

    def close(self) -> None:
        """Wait for the writer (its error is raised unless one is already on its way) and let it go."""
        self.main.before = None
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.cursor.raw.close()


class Store:
    """The database of one ledger: eventsourcing's recorder and the ledger's side tables."""

    def __init__(self, url: str, *, create: bool = False):
        from eventsourcing.persistence import InfrastructureFactory

        self.url = url
        self.env = parse_url(url)
        self.postgres = self.env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
        guard = None
        if self.postgres:
            guard = self._schema_guard()
        else:
            self._prepare_sqlite_file(create)
        try:
            # The tables are created below, once what the database already holds has been checked.
            self.factory = InfrastructureFactory.construct({**self.env, "CREATE_TABLE": "false"})
            self.recorder = self.factory.application_recorder()
            self.datastore = self.recorder.datastore  # type: ignore[attr-defined]
            self.table = "stored_events"
            self.pos_col = "notification_id" if self.postgres else "rowid"
            if not self.postgres:
                _untrusting_connections(self.datastore.pool)
            self._open_schema()
        except (StorageError, IntegrityFailure):
            raise
        except Exception as exc:
            raise self.translate(exc) from None
        finally:
            if guard is not None:
                guard.close()  # ends the session, which releases its advisory lock

    def _open_schema(self) -> None:
        """Refuse a schema the ledger did not make (see ledger/schema.py), then create what is missing."""
        from ledger import schema

        if self.postgres:
            with self.transaction(write=False) as c:
                schema.refuse(schema.postgres_problems(c, _POSTGRES_COLUMNS))
                checked = schema.postgres_watch(c, list(_POSTGRES_COLUMNS))
            self.recorder.create_table()  # type: ignore[attr-defined]
            with self.transaction(write=True) as c:
                for ddl in side_table_ddl(postgres=True):
                    c.execute(ddl)
            with self.transaction(write=False) as c:
                watch = schema.postgres_watch(c, list(_POSTGRES_COLUMNS))
                if watch != checked:  # tables created just now: checked as they are, in the snapshot watched
                    schema.refuse(schema.postgres_problems(c, _POSTGRES_COLUMNS))
            self._postgres_watch = watch
            return
        statements = [*self.recorder.create_table_statements, *side_table_ddl(postgres=False)]  # type: ignore
        expected = schema.sqlite_expected(tuple(statements))
        with self.transaction(write=False) as c:
            rows = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        schema.refuse(schema.sqlite_problems(rows, expected))
        if len(rows) < len(expected):
            with self.transaction(write=True) as c:  # a new ledger (or one of an older layout with fewer tables)
                schema.refuse(
                    schema.sqlite_problems(
                        c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(), expected
                    )
                )
                for ddl in statements:
                    c.execute(ddl)
        self._sqlite_expected = expected

    # The schema as checked on open, and SQLite's schema_version when it was last checked: a process that
    # keeps the ledger open (the service) would otherwise run a trigger planted after its open in its
    # writes. Comparing the version costs one pragma per transaction; a change means a full check.
    _sqlite_expected: dict[str, tuple[str, str, str | None]] | None = None
    _sqlite_version: int | None = None
    # On PostgreSQL, a statement over the catalog rows the schema check reads, and its value when last checked
    # (see schema.postgres_watch): every write runs it first, under a lock that keeps DDL on the ledger's
    # tables out until it commits; a change of value means a full check.
    _postgres_watch: tuple[str, Any] | None = None

    def _same_postgres_schema(self, raw: Any) -> None:
        """ForeignSchema if the PostgreSQL schema changed since it was checked into something the ledger did not make."""
        from ledger import schema

        assert self._postgres_watch is not None
        sql, value = self._postgres_watch
        raw.execute(sql, prepare=True)
        if tuple(raw.fetchone()) != value:
            c = Cursor(raw, True)
            schema.refuse(schema.postgres_problems(c, _POSTGRES_COLUMNS))
            self._postgres_watch = schema.postgres_watch(c, list(_POSTGRES_COLUMNS))

    def _same_schema(self, cur: Any) -> None:
        """ForeignSchema if the SQLite schema changed since it was checked into something the ledger did not make."""
        from ledger import schema

        cur.execute("PRAGMA schema_version")
        (version,) = cur.fetchone()
        if version != self._sqlite_version:
            assert self._sqlite_expected is not None
            cur.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
            schema.refuse(schema.sqlite_problems(cur.fetchall(), self._sqlite_expected))
            self._sqlite_version = version

    @property
    def _tables_named(self) -> str:
        schema = self.env["POSTGRES_SCHEMA"]
        return ", ".join(f'"{schema}"."{table}"' for table in _POSTGRES_COLUMNS)

    @property
    def label(self) -> str:
        if self.postgres:
            e = self.env
            return f"postgresql://{e['POSTGRES_HOST']}:{e['POSTGRES_PORT']}/{e['POSTGRES_DBNAME']}"
        return self.read_only_path or self.env["SQLITE_DBNAME"]

    read_only_path: str | None = None  # a SQLite ledger opened read-only (see _prepare_sqlite_file)

    def _prepare_sqlite_file(self, create: bool) -> None:
        path = self.env["SQLITE_DBNAME"]
        if path.startswith("file:"):
            return
        _regular_files(path)
        if not os.path.exists(path):
            if not create:
                raise StorageError(
                    f"no ledger at {path} (run `access-ledger init`, or import a file that starts with "
                    "OrganizationCreated)"
                )
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StorageError(f"cannot create the ledger {path}: folder {parent} does not exist")
            try:
                # The ledger holds who may read which credentials: owner-only from the first byte.
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StorageError(f"cannot create the ledger {path}: {exc.strerror}") from None
        elif not os.access(path, os.R_OK):
            raise StorageError(f"cannot read the ledger {path}: permission denied")
        elif not create and not _writable(path):
            # An archived copy (read-only file, folder or file system) is read where it lies: a write
            # would fail anyway (one clear line, see translate). When nobody can write the folder,
            # `immutable` tells SQLite so: it then needs no -wal/-shm beside the file, which it could not
            # create. A -wal left with content is read the ordinary way (immutable would skip it).
            folder = os.path.dirname(os.path.abspath(path))
            wal = path + "-wal"
            immutable = not _writable(folder) and not (os.path.exists(wal) and os.path.getsize(wal))
            self.read_only_path = path
            self.env["SQLITE_DBNAME"] = f"file:{quote(os.path.abspath(path))}?mode=ro" + (
                "&immutable=1" if immutable else ""
            )

    def _schema_guard(self) -> Any:
        """A session holding an advisory lock while the tables are created.

        PostgreSQL's CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE of the same
        object ("tuple concurrently updated"), so processes opening a new ledger take turns.
        """
        import psycopg

        e = self.env
        schema = e["POSTGRES_SCHEMA"]
        try:
            conn = psycopg.connect(
                host=e["POSTGRES_HOST"],
                port=int(e["POSTGRES_PORT"]),
                dbname=e["POSTGRES_DBNAME"],
                user=e["POSTGRES_USER"],
                password=e["POSTGRES_PASSWORD"],
                connect_timeout=10,
                autocommit=True,
            )
            try:
                conn.execute("SELECT pg_advisory_lock(hashtext('access-ledger schema'))")
                if schema != "public":
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            except BaseException:
                conn.close()
                raise
            return conn
        except psycopg.Error as exc:
            raise StorageError(f"cannot reach PostgreSQL at {self.label}: {_first_line(exc)}") from None

    # -- transactions --------------------------------------------------------------------

    # The read transaction `reading` holds open, and the thread holding it (reads made there join it).
    _reading: tuple[int, Cursor] | None = None

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """One read transaction (one snapshot) for every read made inside it on this thread: a service request
        checks its token, reads the head and answers in it, paying for BEGIN, the schema check and ROLLBACK
        once. A write inside runs in its own transaction, and the reads here do not see it."""
        held = self._reading
        if held is not None and held[0] == threading.get_ident():
            yield held[1]
            return
        with self.transaction(write=False) as c:
            self._reading = (threading.get_ident(), c)
            try:
                yield c
            finally:
                self._reading = None

    def in_reading(self) -> bool:
        """Whether this thread is inside `reading` (its reads see that transaction's snapshot)."""
        held = self._reading
        return held is not None and held[0] == threading.get_ident()

    @contextmanager
    def transaction(self, *, write: bool, wait: bool = True) -> Iterator[Cursor]:
        """One database transaction; committed on success when `write`, rolled back otherwise (a read inside
        `reading`, on its thread, is made in that one). A write waits for another process's write to end, up to
        the lock timeout (ConcurrentWrite then); not `wait`: on SQLite it does not wait at all (a cache stored on
        the read path, which must not hold a question up; on PostgreSQL such a write takes no lock another write
        holds)."""
        held = self._reading
        if not write and held is not None and held[0] == threading.get_ident():
            yield held[1]
            return
        try:
            if self.postgres:
                from psycopg.rows import tuple_row

                with self.datastore.get_connection() as conn:
                    with conn.transaction(force_rollback=not write):
                        with conn.cursor(row_factory=tuple_row) as raw:
                            # One round trip for both (statements without parameters).
                            prelude = []
                            if not write:
                                # One snapshot for the whole read: under READ COMMITTED each statement sees
                                # the writes committed before it, so a write committed between the head
                                # row's look-up and the log's would look like a tampered head.
                                prelude.append("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            if self.env["POSTGRES_SCHEMA"] != "public":
                                prelude.append(f'SET LOCAL search_path TO "{self.env["POSTGRES_SCHEMA"]}"')
                            watched = write and self._postgres_watch is not None
                            if watched:
                                # Taken before the schema is compared: DDL on these tables (a trigger, a rule, a
                                # policy, an index, a column) waits for this write to end, so what is compared is
                                # what the write runs against.
                                prelude.append(f"LOCK TABLE {self._tables_named} IN ROW EXCLUSIVE MODE")
                            if prelude:
                                raw.execute("; ".join(prelude))
                            if watched:
                                self._same_postgres_schema(raw)
                            yield Cursor(raw, True)
            else:
                with self.datastore.get_connection(commit=write) as conn:
                    with conn.transaction(commit=write) as cur:
                        if write:
                            # The write lock from the first statement (the transaction begun is still empty): a
                            # write that began by reading (the schema check below) would read a snapshot and,
                            # should another process commit before it writes, fail at once ("database is
                            # locked") instead of waiting its turn for up to the lock timeout.
                            cur.execute("COMMIT")
                            self._begin_immediate(cur, wait)
                        if self._sqlite_expected is not None:
                            self._same_schema(cur)
                        yield Cursor(cur, False)
        except StorageError:
            raise
        except Exception as exc:
            translated = self.translate(exc)
            if translated is None:
                raise
            raise translated from None

    @staticmethod
    def _begin_immediate(cur: Any, wait: bool) -> None:
        """BEGIN IMMEDIATE: the write lock now, within the connection's busy timeout (none if not `wait`)."""
        if wait:
            cur.execute("BEGIN IMMEDIATE")
            return
        cur.execute("PRAGMA busy_timeout")
        (timeout,) = cur.fetchone()
        cur.execute("PRAGMA busy_timeout = 0")
        try:
            cur.execute("BEGIN IMMEDIATE")
        finally:
            cur.execute(f"PRAGMA busy_timeout = {int(timeout)}")  # (the connection goes back to the pool)

    def translate(self, exc: BaseException) -> StorageError | None:
        """Map a database error to a one-line StorageError (None: not a storage error)."""
        from eventsourcing.persistence import PersistenceError

        cause: BaseException = exc
        while isinstance(cause, PersistenceError) and cause.__cause__ is not None:
            cause = cause.__cause__
        # Only a database's own error is read for its words: a refusal raised inside a transaction may
        # quote a name ("unknown principal 'user:locked'"), which must never read as a lock.
        if not (isinstance(cause, (sqlite3.Error, PersistenceError, OSError)) or _from_psycopg(cause)):
            return None
        msg = _first_line(cause)
        low = msg.lower()
        if "readonly" in low or "read-only" in low or "read only" in low:
            return StorageError(f"the ledger {self.label} is read-only: nothing was written")
        if "disk is full" in low or "no space" in low:
            return StorageError(f"no space left for the ledger {self.label}: nothing was written")
        if "locked" in low or "lock timeout" in low or "could not obtain lock" in low:
            return ConcurrentWrite(
                f"another writer held the ledger {self.label} too long: nothing was written; try again"
            )
        if "terminating connection" in low or "server closed the connection" in low:
            return StorageError(f"the database server ended the session of {self.label} ({msg}): nothing was written")
        if "unable to open" in low or "connection" in low or "could not" in low:
            return StorageError(f"cannot open the ledger {self.label}: {msg}")
        if isinstance(cause, OSError):
            return None
        return StorageError(f"database error on {self.label}: {msg}")

    # -- writing -------------------------------------------------------------------------

    def lock_head(self, c: Cursor) -> tuple[int, str, str]:
        """Take the write lock (first statement of every write) and return (position, at, link), checked
        as `head` checks them; with the seal key, the head must carry the key's seal (no keyed write extends
        events written without the key: its seal would vouch for them)."""
        from ledger.integrity import head_seal_problem, seal_key

        position, _, link, seal = self._lock_head_row(c)
        head = self._checked_head(c, position, link)
        key = seal_key()
        if key is not None:
            problem = head_seal_problem(head[0], head[2], seal, key)
            if problem is not None:
                raise IntegrityFailure(problem)
        return head

    def _checked_head(
        self, c: Cursor, position: Any, link: Any, read: tuple[int, list[tuple[Any, ...]]] | None = None
    ) -> tuple[int, str, str]:
        """The head row's (position, link) checked against the log, with the head event's time.

        The head row is derived data, and every read stops at it: its position must be the newest
        stored event's (a head set back hides events, one set forward would make every reader walk
        to it), and its link the one recomputed from the head event's stored bytes and the chain link
        before it. The time is read from those bytes. Three look-ups by key.
        """
        position = as_number(position, "al_head.position")
        last, rows = read if read is not None else self._last_two(c, position)
        if position != last:
            raise IntegrityFailure(
                f"the head says position {position} but the newest stored event is at {last}: "
                "the log or its head was tampered with; run `access-ledger verify`"
            )
        if position == 0:
            return 0, "", GENESIS_LINK
        from ledger.integrity import next_link

        if position > 1 and (len(rows) < 2 or rows[0][0] != position - 1):
            raise self.gap(c, position)
        before = rows[0][5] if len(rows) == 2 else GENESIS_LINK
        pos, oid, version, topic, state = rows[-1][:5]
        at = time_in(state)
        if (
            not isinstance(before, str)
            or at is None
            or not isinstance(link, str)
            or next_link(before, pos, oid, version, topic, state) != link
        ):
            raise IntegrityFailure(
                f"the head does not match the event at position {position}: the log or its "
                "chain was tampered with; run `access-ledger verify`"
            )
        return position, at, link

    def _event_columns(self) -> str:
        """What `_last_two` reads of an event `e` and its link `ch`, as `read_raw` gives them."""
        blob = "''::BYTEA" if self.postgres else "x''"
        return (
            f"e.{self.pos_col}, coalesce(replace(CAST(e.originator_id AS TEXT), '-', ''), ''), "
            f"coalesce(CAST(e.originator_version AS BIGINT), -1), coalesce(CAST(e.topic AS TEXT), ''), "
            f"coalesce({'e.state' if self.postgres else 'CAST(e.state AS BLOB)'}, {blob}), ch.link"
        )

    def _last_two(self, c: Cursor, position: int) -> tuple[int, list[tuple[int, str, int, str, bytes, str | None]]]:
        """The newest stored position, and `read_raw`'s rows at position - 1 and position: one round trip."""
        c.execute(
            f"SELECT m.last, r.* FROM (SELECT MAX({self.pos_col}) AS last FROM {self.table}) m LEFT JOIN ("
            f"SELECT {self._event_columns()} FROM {self.table} e LEFT JOIN al_chain ch "
            f"ON ch.position = e.{self.pos_col} WHERE e.{self.pos_col} >= ? AND e.{self.pos_col} <= ?) r ON 1 = 1",
            (max(1, position - 1), position),
        )
        return self._two_rows(c.fetchall())

    def _two_rows(self, got: list[Any]) -> tuple[int, list[tuple[int, str, int, str, bytes, str | None]]]:
        """(newest stored position, the events' rows in position order) from rows of (last, *event columns)."""
        last = as_number(got[0][0] or 0, "the newest stored position") if got else 0
        rows = sorted(
            (int(p), oid, int(ver), topic, _as_bytes(state), link)
            for _, p, oid, ver, topic, state, link in got
            if p is not None
        )
        return last, rows

    def gap(self, c: Cursor, position: int) -> IntegrityFailure:
        """The error for a log with a hole below `position` (positions are dense), naming the first missing one."""
        c.execute(f"SELECT MAX({self.pos_col}) FROM {self.table} WHERE {self.pos_col} < ?", (position,))
        return _gap(as_number(c.fetchone()[0] or 0, "a stored position") + 1)

    def _lock_head_row(self, c: Cursor) -> tuple[int, str, str, tuple[Any, Any] | None]:
        """(position, at, link) of the head row, locked, and (link, mac) of the seal at its position (None: none)."""
        # The seal in the same statement: the write-side seal check costs no statement.
        select = (
            "SELECT h.position, h.at, h.link, s.position, s.link, s.mac FROM al_head h "
            "LEFT JOIN al_seals s ON s.position = h.position WHERE h.id = 1"
        )
        if self.postgres:
            # Every statement of a write is a look-up by key. Inside a long import the planner's
            # statistics still describe the tables as they were before it (empty, for a new ledger),
            # and on them a full scan can look cheaper than an index: made never cheaper here, a
            # plan cannot degrade as the transaction grows.
            # Both in one round trip; the row is the second statement's result.
            c.execute(f"SET LOCAL enable_seqscan = off; {select} FOR UPDATE OF h")
            c.raw.nextset()
        else:
            c.execute("UPDATE al_head SET position = position WHERE id = 1")
            c.execute("PRAGMA cache_size = -65536")
            c.execute(select)
        row = c.fetchone()
        if row is None:
            if self.max_position(c):
                raise IntegrityFailure(
                    "the log holds events but its head row is missing: the ledger was tampered "
                    "with; run `access-ledger verify`"
                )
            c.execute("INSERT INTO al_head (id, position, at, link) VALUES (1, 0, '', ?)", (GENESIS_LINK,))
            return 0, "", GENESIS_LINK, None
        return row[0], row[1], row[2], None if row[3] is None else (row[4], row[5])

    def bulk_writer(self, c: Cursor) -> BulkWriter:
        return BulkWriter(self, c)

    def max_position(self, c: Cursor) -> int:
        c.execute(f"SELECT MAX({self.pos_col}) FROM {self.table}")
        return as_number(c.fetchone()[0] or 0, "the newest stored position")

    def insert_events(self, c: Cursor, rows: Sequence[Row | tuple[int, str, int, str, bytes]]) -> None:
        """Append rows (position, stream, version, topic, state) into eventsourcing's stored_events."""
        if not rows:
            return
        if self.postgres:
            # COPY in PostgreSQL's binary format, encoded here: no statement per row, no escaping.
            head, size = _EVENT_HEAD.pack, _INT4.pack
            topics: dict[str, bytes] = {}
            parts = [_COPY_SIGNATURE]
            for position, oid, version, topic, state in rows:
                t = topics.get(topic)
                if t is None:
                    t = topics[topic] = size(len(topic.encode())) + topic.encode()
                parts.append(head(5, 8, position, 16, bytes.fromhex(oid), 8, version))
                parts.append(t)
                parts.append(size(len(state)))
                parts.append(state)
            parts.append(_COPY_TRAILER)
            with c.raw.copy(
                f"COPY {self.table} (notification_id, originator_id, originator_version, topic, "
                "state) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(b"".join(parts))
        else:
            c.executemany(
                f"INSERT INTO {self.table} (rowid, originator_id, originator_version, topic, state) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def insert_rows(self, c: Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a side table: COPY on PostgreSQL, one prepared INSERT on SQLite."""
        if not rows:
            return
        if self.postgres:
            with c.raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            c.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)

    def known_ids(self, c: Cursor, ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """{id: (position, stored bytes)} for the given idempotency ids that are already recorded.

        Two look-ups by primary key, each O(len(ids)) index probes, never a join: inside a long import
        transaction PostgreSQL's statistics still say the tables are empty, and a join planned on them
        walked every stored event once per id (quadratic in the import's size).
        """
        found: dict[str, tuple[int, bytes]] = {}
        for i in range(0, len(ids), 1000):
            part = list(ids[i : i + 1000])
            if self.postgres:
                c.execute("SELECT event_id, position FROM al_ids WHERE event_id = ANY(?)", (part,))
            else:
                c.execute(
                    f"SELECT event_id, position FROM al_ids WHERE event_id IN ({', '.join('?' * len(part))})", part
                )
            position_of = {r[0]: as_number(r[1], f"al_ids' row for id {r[0]!r}") for r in c.fetchall()}
            if not position_of:
                continue
            state_at = dict(self.states_at(c, sorted(set(position_of.values()))))
            for event_id, position in position_of.items():
                # An id whose event is missing is left to `verify`; here it counts as unknown.
                if position in state_at:
                    found[event_id] = (position, state_at[position])
        return found

    def altered_columns(self, c: Cursor) -> list[str]:
        """Columns of the ledger's tables whose type is not the one the ledger created (PostgreSQL keeps a
        column's type, so a value of another type needs the schema altered first; SQLite stores any
        value in any column, and every reader checks the values it reads instead)."""
        if not self.postgres:
            return []
        c.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY(?)",
            (list(_POSTGRES_COLUMNS),),
        )
        found = {(t, col): kind for t, col, kind in c.fetchall()}
        return [
            f"{t}.{col} is {found.get((t, col), 'missing')}, not {kind}"
            for t, columns in _POSTGRES_COLUMNS.items()
            for col, kind in columns.items()
            if found.get((t, col)) != kind
        ]

    def ids_not_in_their_events(self, c: Cursor, limit: int = 5) -> list[tuple[str, int]]:
        """(id, position) rows of al_ids whose position holds no event ending with that id (as the ledger
        writes it: `,"id":<the id as JSON>}`), at most `limit`. One pass, in the database."""
        if self.postgres:
            c.execute(
                f"SELECT i.event_id, i.position FROM al_ids i LEFT JOIN {self.table} e "
                f"ON e.{self.pos_col} = i.position WHERE e.state IS NULL OR right(convert_from(e.state, "
                "'UTF8'), char_length(',\"id\":' || to_json(i.event_id)::text || '}')) "
                "IS DISTINCT FROM ',\"id\":' || to_json(i.event_id)::text || '}' LIMIT ?",
                (limit,),
            )
        else:
            c.execute(
                f"SELECT i.event_id, i.position FROM al_ids i LEFT JOIN {self.table} e "
                f"ON e.{self.pos_col} = i.position WHERE e.state IS NULL OR typeof(i.event_id) <> 'text' OR "
                "substr(CAST(e.state AS TEXT), -length(',\"id\":' || json_quote(CAST(i.event_id AS TEXT)) || "
                "'}')) IS NOT ',\"id\":' || json_quote(CAST(i.event_id AS TEXT)) || '}' LIMIT ?",
                (limit,),
            )
        # Shown as stored (an id or position someone rewrote with another type is named, not converted).
        return [(str(r[0]), r[1]) for r in c.fetchall()]

    def states_at(self, c: Cursor, positions: Sequence[int]) -> list[tuple[int, bytes]]:
        """(position, stored bytes) of the given positions, each fetched by its key."""
        out: list[tuple[int, bytes]] = []
        for i in range(0, len(positions), 1000):
            part = list(positions[i : i + 1000])
            if self.postgres:
                c.execute(f"SELECT {self.pos_col}, state FROM {self.table} WHERE {self.pos_col} = ANY(?)", (part,))
            else:
                c.execute(
                    f"SELECT {self.pos_col}, state FROM {self.table} WHERE {self.pos_col} IN "
                    f"({', '.join('?' * len(part))})",
                    part,
                )
            out.extend((int(p), _as_bytes(state)) for p, state in c.fetchall())
        return out

    def stream_version(self, c: Cursor, originator_hex: str) -> int:
        key: Any = uuid.UUID(originator_hex) if self.postgres else originator_hex
        c.execute(f"SELECT MAX(originator_version) FROM {self.table} WHERE originator_id = ?", (key,))
        row = c.fetchone()
        return int(row[0] or 0)

    # -- reading -------------------------------------------------------------------------

    def read(self, start: int = 1, stop: int | None = None, batch: int = 10000) -> Iterator[tuple[int, bytes]]:
        """(position, canonical event bytes) in position order, from start to stop (default: the head)
        inclusive."""
        if stop is None:
            stop = self.head()[0]
        yield from self._read_range(start, stop, batch, "")

    def read_topics_excluding(
        self, start: int, stop: int, topics: Sequence[str], batch: int = 50_000
    ) -> Iterator[tuple[int, bytes]]:
        """(position, bytes) from start to stop inclusive, leaving out events of the given topics."""
        yield from self._read_range(
            start, stop, batch, f" AND topic NOT IN ({', '.join('?' * len(topics))})", tuple(topics)
        )

    def _read_range(
        self, start: int, stop: int, batch: int, where: str, params: tuple[Any, ...] = ()
    ) -> Iterator[tuple[int, bytes]]:
        """Rows of positions start..stop in batches. A batch with no rows skips to the next stored
        position, so the number of batches is bounded by the stored events, whatever `stop` says; read
        whole (no topic left out), a hole in the positions is IntegrityFailure naming it."""
        position = start
        while position <= stop:
            upper = min(stop, position + batch - 1)
            with self.transaction(write=False) as c:
                c.execute(
                    f"SELECT {self.pos_col}, state FROM {self.table} WHERE {self.pos_col} >= ? AND "
                    f"{self.pos_col} <= ?{where} ORDER BY {self.pos_col}",
                    (position, upper, *params),
                )
                rows = c.fetchall()
                if not where and len(rows) != upper - position + 1:
                    # Every stored position holds an event: a hole is named, never walked over. A batch
                    # ends short at the end of the log, or at a hole (then later events exist).
                    missing = next(
                        (position + i for i, r in enumerate(rows) if r[0] != position + i), position + len(rows)
                    )
                    c.execute(f"SELECT 1 FROM {self.table} WHERE {self.pos_col} > ? LIMIT 1", (missing,))
                    if c.fetchone() is not None:
                        raise _gap(missing)
                    stop = missing - 1
                if not rows:
                    c.execute(f"SELECT MIN({self.pos_col}) FROM {self.table} WHERE {self.pos_col} > ?", (upper,))
                    following = c.fetchone()[0]
                    if following is None:
                        return
                    position = as_number(following, "a stored position")
                    continue
            for pos, state in rows:
                yield int(pos), _as_bytes(state)
            position = upper + 1

    def read_raw(
        self, c: Cursor, start: int, limit: int, until: int | None = None
    ) -> list[tuple[int, str, int, str, bytes, str | None]]:
        """(position, originator_id as hex, version, topic, state, chain link or None) rows from `start`
        (up to `until`, if given) for verification; the link is the one `al_chain` holds there."""
        # Typed (and never NULL) in SQL: a column someone rewrote with another type, or emptied, still
        # hashes, and fails, cleanly.
        blob = "''::BYTEA" if self.postgres else "x''"
        c.execute(
            f"SELECT e.{self.pos_col}, coalesce(replace(CAST(e.originator_id AS TEXT), '-', ''), ''), "
            f"coalesce(CAST(e.originator_version AS BIGINT), -1), coalesce(CAST(e.topic AS TEXT), ''), "
            f"coalesce({'e.state' if self.postgres else 'CAST(e.state AS BLOB)'}, {blob}), ch.link, "
            f"CAST(ch.at AS TEXT) FROM {self.table} e LEFT JOIN al_chain ch ON ch.position = e.{self.pos_col} "
            f"WHERE e.{self.pos_col} >= ? AND e.{self.pos_col} <= ? ORDER BY e.{self.pos_col} LIMIT ?",
            (start, until if until is not None else 2**62, limit),
        )
        rows = c.fetchall()
        if self.postgres:
            return [
                (int(pos), oid, int(ver), topic, _as_bytes(state), link, at)
                for pos, oid, ver, topic, state, link, at in rows
            ]
        return rows

    def head(self) -> tuple[int, str, str]:
        """(position, time, link) of the newest event: the head row, checked against the log (see
        `_checked_head`; IntegrityFailure if it disagrees). Every read is bounded by it. Inside `pinned`,
        the head given there."""
        if self._pinned is not None:
            return self._pinned
        with self.transaction(write=False) as c:
            return self._head_in(c)

    _pinned: tuple[int, str, str] | None = None

    @contextmanager
    def pinned(self, head: tuple[int, str, str]) -> Iterator[None]:
        """Answer `head()` with `head`, a head checked by its caller in the same request (the service's token
        check reads and checks it once; the question is answered at that head, not at a second read of it).
        Only for reads: a write takes the head row's lock and checks it itself (`lock_head`)."""
        self._pinned = head
        try:
            yield
        finally:
            self._pinned = None

    def head_in(self, c: Cursor) -> tuple[int, str, str]:
        """`head`, read in the caller's transaction (never the pinned head)."""
        return self._head_in(c)

    def _head_in(self, c: Cursor) -> tuple[int, str, str]:
        # The head row with what `_checked_head` checks it against (`_last_two`'s rows): one statement.
        c.execute(
            f"SELECT h.position, h.link, m.last, {self._event_columns()} FROM al_head h "
            f"CROSS JOIN (SELECT MAX({self.pos_col}) AS last FROM {self.table}) m "
            f"LEFT JOIN {self.table} e ON e.{self.pos_col} IN (h.position - 1, h.position) "
            f"LEFT JOIN al_chain ch ON ch.position = e.{self.pos_col} WHERE h.id = 1"
        )
        got = c.fetchall()
        if not got:
            if self.max_position(c):
                raise IntegrityFailure(
                    "the log holds events but its head row is missing: the ledger was "
                    "tampered with; run `access-ledger verify`"
                )
            return 0, "", GENESIS_LINK
        position, link = got[0][0], got[0][1]
        # The rows joined are those of the head row's position as stored; one of another type is looked up anew.
        read = self._two_rows([row[2:] for row in got]) if type(position) is int else None
        head = self._checked_head(c, position, link, read)
        self._sealed_by_key(c, head[0], head[2])
        return head

    _sealed: tuple[int, str, bytes] | None = None  # the head last proven sealed, and the key

    def _sealed_by_key(self, c: Cursor, position: int, link: str) -> None:
        """With the seal key, IntegrityFailure unless the head carries the key's seal: no answer comes from
        events written without the key (as no token check honours them and no write extends them). Checked
        once per head and key: while the head stands still, a read adds no statement."""
        from ledger.integrity import seal_key, sealed_head

        key = seal_key()
        if key is None or (position, link, key) == self._sealed:
            return
        sealed_head(c, position, link, key)
        self._sealed = (position, link, key)

    def time_at(self, c: Cursor, position: int) -> str | None:
        """The `at` of the event at `position`, read from its stored (chained) bytes; None if no such event."""
        c.execute(f"SELECT state FROM {self.table} WHERE {self.pos_col} = ?", (position,))
        row = c.fetchone()
        return None if row is None else time_in(_as_bytes(row[0]))

    def position_at(self, at: str) -> int:
        """Newest position whose event time is <= at (canonical text), 0 if none.

        Time never decreases along positions (`verify` checks it), so a binary search over the
        positions answers this without an index on time. Times are read from the events' own
        bytes, which the hash chain covers: no side table can move an answer in time.
        """
        with self.transaction(write=False) as c:
            head, head_at, _ = self._head_in(c)
            if head == 0:
                return 0
            if head_at <= at:
                return head
            lo, hi = 0, head  # invariant: at(lo) <= at (lo=0: nothing), at(hi) > at
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (self.time_at(c, mid) or "") <= at:
                    lo = mid
                else:
                    hi = mid
            return lo

    def first_position_from(self, at: str) -> int:
        """Oldest position whose event time is >= at; head + 1 if none."""
        head = self.head()[0]
        if at <= "":
            return 1
        before = self.position_at(at)
        # position_at gives the newest with time <= at; step back over events exactly at `at`.
        with self.transaction(write=False) as c:
            before_at = self.time_at(c, before) if before else None
            if before_at is None or before_at < at:
                return before + 1 if before < head else head + 1
            lo, hi = 0, before  # at(hi) == at; find the first position with that time
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (self.time_at(c, mid) or "") < at:
                    lo = mid
                else:
                    hi = mid
            return hi

    def time_of(self, position: int) -> str | None:
        """The time of the event at `position`, from its stored bytes."""
        with self.transaction(write=False) as c:
            return self.time_at(c, position)

    def count(self) -> int:
        with self.transaction(write=False) as c:
            c.execute(f"SELECT COUNT(*) FROM {self.table}")
            return int(c.fetchone()[0])

    def close(self) -> None:
        try:
            self.factory.close()
        except Exception:  # closing is best effort; nothing is pending
            pass


# A snapshot row with the chain link al_chain holds at its position, if that is at or before the head row's.
_BOUND = (
    "FROM al_snapshots s LEFT JOIN al_chain ch "
    "ON ch.position = s.position AND ch.position <= (SELECT position FROM al_head WHERE id = 1) "
    "WHERE s.name = ?"
)


class Snapshots:
    """Named blobs with the position they were taken at, for projections' persisted state."""

    def __init__(self, store: Store):
        self.store = store

    def save(self, name: str, position: int, data: bytes) -> None:
        if self.store.read_only_path:  # a cache: an archived, read-only ledger answers without it
            return
        with self.store.transaction(write=True, wait=False) as c:  # a cache: never wait for a write under way
            # One statement: two workers storing the same snapshot at once must not collide on its name.
            c.execute(
                "INSERT INTO al_snapshots (name, position, data) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, data = excluded.data",
                (name, position, data),
            )

    def load(self, name: str) -> tuple[Any, bytes] | None:
        with self.store.transaction(write=False) as c:
            c.execute("SELECT position, data FROM al_snapshots WHERE name = ?", (name,))
            row = c.fetchone()
        # The position as stored: the reader checks it (a snapshot is a cache, one it cannot use is rebuilt).
        return None if row is None else (row[0], _as_bytes(row[1]))

    def load_bound(self, name: str) -> tuple[Any, bytes, Any] | None:
        """(position as stored, data, the chain link al_chain holds at that position if it is at or before
        the head row's, else None): one look-up for a reader that checks a snapshot's binding."""
        with self.store.transaction(write=False) as c:
            c.execute(f"SELECT s.position, s.data, ch.link {_BOUND}", (name,))
            row = c.fetchone()
        return None if row is None else (row[0], _as_bytes(row[1]), row[2])

    def probe_bound(self, name: str, size: int) -> tuple[Any, Any, bytes | None, Any] | None:
        """(position as stored, the data's length, its first `size` bytes, the chain link as in `load_bound`),
        without reading the rest of the data (a snapshot of a large state is tens of megabytes). The first
        bytes are None when the data is not a blob (SQLite keeps any type in any column)."""
        with self.store.transaction(write=False) as c:
            if self.store.postgres:  # a slice of a TOASTed value is read (and decompressed) only that far
                c.execute(
                    f"SELECT s.position, octet_length(s.data), substr(s.data, 1, {int(size)}), ch.link {_BOUND}",
                    (name,),
                )
                row = c.fetchone()
                return None if row is None else (row[0], row[1], _as_bytes(row[2]), row[3])
            c.execute(f"SELECT s.position, length(s.data), typeof(s.data), s.rowid, ch.link {_BOUND}", (name,))
            row = c.fetchone()
            if row is None:
                return None
            start = c.blob_start("al_snapshots", "data", row[3], size) if row[2] == "blob" else None
            return (row[0], row[1], start, row[4])

    def names(self, prefix: str = "") -> list[tuple[str, Any]]:
        """(name, position as stored) of the snapshots whose name starts with `prefix`."""
        with self.store.transaction(write=False) as c:
            c.execute(
                "SELECT name, position FROM al_snapshots WHERE name LIKE ? ESCAPE '\\' ORDER BY position",
                (prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
            )
            return [(str(r[0]), r[1]) for r in c.fetchall()]

    def delete(self, name: str) -> None:
        with self.store.transaction(write=True) as c:
            c.execute("DELETE FROM al_snapshots WHERE name = ?", (name,))


# PostgreSQL's binary COPY: signature, flags, header extension; per row a field count, then each
# field's length and bytes; -1 as the trailer.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_EVENT_HEAD = struct.Struct(">hiqi16siq")  # 5 fields; notification_id; originator_id (uuid); version
_INT4 = struct.Struct(">i")


_AT_KEY = b'","at":"'


def time_in(state: bytes) -> str | None:
    """The `at` of an event from its canonical bytes (`{"type":"...","at":"...",...`), None if the bytes
    are not laid out that way (then they are not bytes the ledger wrote: `verify` fails on them)."""
    i = state.find(_AT_KEY, 0, 64)
    if i < 0 or not state.startswith(b'{"type":"'):
        return None
    j = state.find(b'"', i + 8)
    if j < 0 or state.count(b'"at":') != 1:
        return None
    return state[i + 8 : j].decode("utf-8", "replace")


def _as_bytes(value: Any) -> bytes:
    """Stored state as bytes, even if someone rewrote the column as text or a number (which then fail
    the chain, never the reader)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return (value if isinstance(value, str) else str(value)).encode("utf-8", "replace")


def as_number(value: Any, where: str) -> int:
    """A position (or count) read from a table: an integer, or IntegrityFailure naming where it was read
    (a column someone rewrote with text or a blob ends in one line, not in a conversion error)."""
    if type(value) is int:
        return value
    shown = repr(value if not isinstance(value, (bytes, memoryview)) else bytes(value))[:40]
    raise IntegrityFailure(
        f"{where} holds {shown} where a number belongs: the database was edited outside the "
        "ledger; run `access-ledger verify`"
    )


def _gap(missing: int) -> IntegrityFailure:
    return IntegrityFailure(
        f"no event at position {missing}, yet the log holds later ones: the log has a gap (events "
        "removed, or stored far past the others); run `access-ledger verify`"
    )


def _from_psycopg(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("psycopg")


STATEMENT_CACHE = 64  # prepared statements each SQLite connection keeps


def _untrusting_connections(pool: Any) -> None:
    """Every SQLite connection of the pool runs with `trusted_schema` off: a schema object may call no
    function with side effects, nor a virtual table (a second line behind the schema check). And each keeps
    its prepared statements: eventsourcing opens them with `cached_statements=True`, a cache of one, so a
    transaction of a few statements compiled each one every time (most of a service read's SQL time)."""
    from eventsourcing.persistence import InterfaceError
    from eventsourcing.sqlite import SQLITE3_DEFAULT_LOCK_TIMEOUT, SQLiteConnection

    def untrusting() -> Any:
        # As eventsourcing's SQLiteConnectionPool._create_connection (9.5), with a statement cache.
        try:
            raw = sqlite3.connect(
                database=pool.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                cached_statements=STATEMENT_CACHE,
                timeout=pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as e:
            raise InterfaceError(e) from e
        if not pool.is_sqlite_memory_mode and not pool.is_journal_mode_wal:
            cursor = raw.cursor()
            cursor.execute("PRAGMA journal_mode;")
            if cursor.fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL;")
                pool.journal_mode_was_changed_to_wal = True
            pool.is_journal_mode_wal = True
        raw.row_factory = sqlite3.Row
        raw.execute("PRAGMA trusted_schema = OFF")
        return SQLiteConnection(sqlite_conn=raw, max_age=pool.max_age)

    pool._create_connection = untrusting


def _regular_files(path: str) -> None:
    """The ledger file and its journals must be regular files (a FIFO would block every reader, a device
    feed it endless bytes): StorageError otherwise. A journal that does not exist is fine; one that is a
    link is refused, wherever it points (SQLite would write, and truncate, the file it names). SQLite finds
    the journals beside the file a linked ledger resolves to, so they are looked for there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):  # dangling: SQLite would create its target wherever it points
            raise StorageError(f"{path} is not a regular file (a link to nothing): the ledger is not opened") from None
        mode = None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise StorageError(f"{path} is not a regular file: the ledger is not opened")
    real = os.path.realpath(path)
    for name in (real + "-wal", real + "-shm", real + "-journal"):
        try:
            mode = os.lstat(name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot read {name}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise StorageError(f"{name} is not a regular file: the ledger is not opened")


def _writable(path: str) -> bool:
    """Whether `path` may be written: the OS allows it, and it is not marked read-only (no write bit
    at all: an archive made read-only is read in place even by root, whom the bits do not stop)."""
    try:
        return os.access(path, os.W_OK) and bool(os.stat(path).st_mode & 0o222)
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
