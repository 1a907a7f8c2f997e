"""The DuckDB warehouse: the ledger's events in a flat table plus interval tables, synced exactly once.

Sync reads the notification log from the warehouse's position on, a chunk at a time. A reader
thread turns each chunk into a JSONL file (positions written into the lines) while the main thread
loads the previous one with DuckDB's own JSON reader; each chunk is one DuckDB transaction that
also records the new position, so an interrupted sync leaves whole chunks and the next run goes on
from there. The interval tables are then brought up to the same position in one more transaction
(rebuilding only the keys the new events touch).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.errors import WarehouseBusy, WarehouseError, WarehouseMismatch
from reports.sql_files import run_script, sql_text

if TYPE_CHECKING:
    from ledger.app import AccessLedger

SCHEMA_VERSION = "5"
CHUNK = 250_000
LOCK_WAIT = 30.0
#: The fields of DESIGN section 4, as read from the JSONL bytes (lists are the permission lists).
FIELDS: tuple[str, ...] = (
    "type", "at", "actor", "reason", "id", "name", "preset", "tenant", "display_name", "user", "email",
    "service_account", "team", "member", "role", "scope", "base", "permissions", "description", "add",
    "remove", "principal", "resource", "expires_at", "connector", "connector_type", "outcome", "context",
    "action", "token_id", "scopes",
)
LIST_FIELDS = frozenset({"permissions", "add", "remove", "scopes"})
_JSON_COLUMNS = "{'position': 'BIGINT', " + ", ".join(
    f"'{f}': '{'VARCHAR[]' if f in LIST_FIELDS else 'VARCHAR'}'" for f in FIELDS) + "}"
_LOAD = f"""
INSERT INTO events
SELECT position, type, "at"::TIMESTAMP, actor, reason, id, name, preset, tenant, display_name, "user", email,
       service_account, team, member, role, scope, base, permissions, description, "add", "remove", principal,
       resource, expires_at::TIMESTAMP, connector, connector_type, outcome, context, action,
       token_id, scopes,
       CASE
           WHEN type IN ('RoleAssigned', 'RoleUnassigned') THEN principal
           WHEN type IN ('TeamMemberAdded', 'TeamMemberRemoved') THEN member
           WHEN type IN ('UserCreated', 'UserDeactivated', 'UserReactivated') THEN 'user:' || "user"
           WHEN type IN ('ServiceAccountCreated', 'ServiceAccountDeactivated', 'ServiceAccountReactivated')
               THEN 'service_account:' || service_account
           WHEN type IN ('TeamCreated', 'TeamDeleted') THEN 'team:' || team
       END,
       CASE
           WHEN type = 'ResourceAccessed' THEN split_part(resource, '/', 1)
           WHEN type = 'ConnectorSecretAccessed' THEN 'service_connector'
       END
FROM read_json($path, format = 'newline_delimited', columns = {_JSON_COLUMNS})
"""
_TABLES = ("meta", "sync_state", "events", "predefined_roles", "vocabulary", "principal_status", "tenants", "teams",
           "memberships", "roles", "role_permissions", "role_chain", "role_grants", "assignments", "connectors",
           "usage_totals")


def default_path(led: AccessLedger) -> str:
    """Beside a SQLite ledger (`<ledger>.duckdb`); in memory for an in-memory ledger; else in the working folder."""
    if led.store.postgres:
        return str(Path.cwd() / "access-ledger-warehouse.duckdb")
    name = led.store.env["SQLITE_DBNAME"]
    if name.startswith("file:"):
        return ":memory:"
    return name + ".duckdb"


@contextmanager
def _private_files() -> Iterator[None]:
    """Files created meanwhile (the warehouse, its WAL, the chunk files) are readable by their owner only:
    they hold the same facts as the ledger."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _connect(path: str) -> Any:
    import duckdb

    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            with _private_files():
                con = duckdb.connect(path)
            # DuckDB's own progress bar would write into the audit's output on stdout.
            con.execute("SET enable_progress_bar = false")
            return con
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower() and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if "lock" in text.lower():
                raise WarehouseBusy(f"the warehouse {path} is in use by another process; try again when it is "
                                    "done") from None
            raise WarehouseError(f"cannot open the warehouse {path}: {_first_line(text)}") from None
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open the warehouse {path}: {_first_line(str(exc))}") from None


class Warehouse:
    """A DuckDB file of the ledger's events and interval tables; `con` answers read queries."""

    def __init__(self, led: AccessLedger, con: Any, path: str):
        self.led = led
        self.con = con
        self.path = path
        self.recorded = False  # proven against, and recorded in, the ledger's al_warehouses (see open)
        self.proven: str | None = None  # the file's SHA-256 as proven (or recorded) in this run
        self._proof: tuple[threading.Thread, list[Any], str, tuple[Any, ...]] | None = None  # a hash under way
        self._unrecorded = False  # emptied in this run: recorded after the next sync
        self.rebuilt: str | None = None  # why the file was emptied to be synced afresh, if it was

    @classmethod
    def open(cls, led: AccessLedger, path: str | Path | None = None, *, scratch: bool = False) -> Warehouse:
        """Open (or create) the warehouse of `led` at `path` (default: see default_path).

        A warehouse file is proven before it is used (see `sync`): its bytes must be those the ledger
        recorded after the last sync. A `scratch` warehouse (built and read in one run, then deleted)
        is neither proven nor recorded.
        """
        target = str(path) if path is not None else default_path(led)
        if target != ":memory:":
            parent = Path(target).resolve().parent
            if not parent.is_dir():
                raise WarehouseError(f"cannot create the warehouse {target}: folder {parent} does not exist")
        # A write-ahead log beside the file is replayed by DuckDB as it opens: changes its bytes never show.
        replayed = target != ":memory:" and os.path.exists(target + ".wal") and os.path.getsize(target + ".wal") > 0
        con = _connect(target)
        wh = cls(led, con, target)
        wh.recorded = target != ":memory:" and not scratch
        try:
            wh._prepare(replayed)
        except BaseException:
            con.close()
            raise
        return wh

    def close(self) -> None:
        if self._proof is not None:
            self._proof[0].join()  # nothing is left reading the file
        try:
            self.con.close()
        except Exception:  # closing is best effort; every write was committed or rolled back
            pass

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def _prepare(self, replayed: bool = False) -> None:
        import duckdb

        con = self.con
        try:
            with _private_files():
                exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' "
                                     "AND table_schema = 'main'").fetchall()[0][0]
                version = None
                if exists:
                    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
                    version = rows[0][0] if rows else None
                if version != SCHEMA_VERSION:
                    # Everything here is derived from the ledger: an old layout is dropped and synced again.
                    self._create()
                else:
                    foreign = foreign_objects(con)
                    if foreign:
                        raise WarehouseMismatch(
                            f"the warehouse {self.path} holds {', '.join(foreign[:3])}, which the ledger never "
                            "creates (it could change what the audits read): delete the file to rebuild it")
                    if self.recorded:
                        self._prove(replayed)
                run_script(con, "effective.sql")
        except duckdb.Error as exc:
            _rollback(con)
            raise WarehouseError(f"cannot prepare the warehouse {self.path}: {_first_line(str(exc))}") from None

    def _create(self) -> None:
        """(Re)create every table, empty; the file gets a new id (its record in the ledger is keyed by it)."""
        con = self.con
        con.execute("BEGIN")
        for name, kind in con.execute(
                "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = current_database() "
                "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE database_name = current_database() "
                "AND NOT internal").fetchall():
            con.execute(f'DROP {kind} IF EXISTS "{name}" CASCADE')
        run_script(con, "warehouse.sql")
        self._fill_presets()
        con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('id', ?)", [SCHEMA_VERSION, uuid.uuid4().hex])
        con.execute("INSERT INTO sync_state VALUES (1, 0, NULL, 0, NULL)")
        con.execute("COMMIT")
        self._unrecorded = True

    # -- proof --------------------------------------------------------------------------
    #
    # The warehouse is derived data in a file of its own: anyone who can write that file could change
    # what every audit says. After each sync the ledger records, in its own table al_warehouses, the
    # file's id, the position and chain link it holds and the SHA-256 of its bytes (with
    # ACCESS_LEDGER_SEAL_KEY, an HMAC over them). Before the file is used, its bytes are hashed again:
    # - the same: it is exactly the file the ledger synced (and `verify` compares that with the events);
    # - no record, or one for another position (a sync that was killed, a record deleted, a write-ahead
    #   log replayed on open): nothing proves the file, so it is emptied and synced afresh;
    # - a different hash or MAC at the recorded position: the file was edited, and it is refused.

    def _file_id(self) -> str | None:
        rows = self.con.execute("SELECT value FROM meta WHERE key = 'id'").fetchall()
        return rows[0][0] if rows else None

    def _record_row(self, file_id: str) -> tuple[Any, ...] | None:
        with self.led.store.transaction(write=False) as c:
            c.execute("SELECT position, link, sha256, mac FROM al_warehouses WHERE id = ?", (file_id,))
            return c.fetchone()

    def _prove(self, replayed: bool) -> None:
        from ledger.integrity import KEY_ENV, seal_key

        file_id = self._file_id()
        position, link, intervals_at = self._state()
        # A warehouse of another ledger (or of this one before a rewrite) is refused, never emptied.
        self._check_same_ledger(position, link, self.led.head())
        record = self._record_row(file_id) if file_id is not None else None
        unproven = ("it has no id" if file_id is None else
                    "a write-ahead log was replayed into it as it opened" if replayed else
                    "the ledger holds no record of it" if record is None else
                    f"it holds position {position}, the ledger recorded {record[0]} (an interrupted sync)"
                    if (record[0], record[1]) != (position, link or "") or intervals_at != position else
                    # (a record made before the key was set; one stripped of its MAC gains nothing either)
                    f"its record has no MAC and {KEY_ENV} is set" if seal_key() is not None and record[3] is None
                    else None)
        if unproven is not None:
            self.rebuilt = unproven
            self._create()
            return
        key = seal_key()
        if key is not None and record[3] != _record_mac(key, file_id, *record[:3]):
            raise WarehouseMismatch(
                f"the warehouse {self.path} was edited since its last sync (its record's MAC is missing or wrong "
                f"for the ledger's record at position {position}): delete the file to rebuild it, and run "
                "`access-ledger verify`")
        # The file is hashed while the audit's query runs (hashlib leaves the other core to DuckDB);
        # `confirm` waits for it, and every audit result, and every change to the file, waits for that.
        result: list[Any] = []

        def digest() -> None:
            try:
                result.append(_file_sha256(self.path))
            except BaseException as exc:  # handed to confirm()
                result.append(exc)

        thread = threading.Thread(target=digest, name="warehouse-proof", daemon=True)
        thread.start()
        self._proof = (thread, result, str(record[2]), (position,))

    def confirm(self) -> None:
        """Wait for the proof of the file begun as it opened; WarehouseMismatch if its bytes are not those the
        ledger recorded. Called before any result read from the warehouse is returned, and before the file
        is changed."""
        if self._proof is None:
            return
        thread, result, recorded, (position,) = self._proof
        thread.join()
        self._proof = None
        if isinstance(result[0], BaseException):
            raise WarehouseError(f"cannot read the warehouse {self.path}: {result[0]}")
        if result[0] != recorded:
            raise WarehouseMismatch(
                f"the warehouse {self.path} was edited since its last sync (its bytes are not those the ledger "
                f"recorded at position {position}): delete the file to rebuild it, and run `access-ledger verify`")
        self.proven = result[0]

    def _record(self) -> None:
        """Write the file's record into the ledger (after a sync: the file holds exactly what it should)."""
        from ledger.errors import StorageError
        from ledger.integrity import seal_key

        self.con.execute("CHECKPOINT")  # every change in the file itself, none in a write-ahead log
        file_id = self._file_id()
        position, link, _ = self._state()
        digest = _file_sha256(self.path)
        key = seal_key()
        mac = None if key is None else _record_mac(key, file_id, position, link or "", digest)
        try:
            with self.led.store.transaction(write=True) as c:
                c.execute("DELETE FROM al_warehouses WHERE id = ?", (file_id,))
                c.execute("INSERT INTO al_warehouses (id, position, link, sha256, mac) VALUES (?, ?, ?, ?, ?)",
                          (file_id, position, link or "", digest, mac))
        except StorageError:
            return  # a ledger this user may only read: the file stays unproven and is synced afresh next time
        self.proven = digest
        self._unrecorded = False

    def _fill_presets(self) -> None:
        import pyarrow as pa

        from ledger.vocabulary import PREDEFINED, VOCABULARIES

        roles = [(preset, r.name, r.scope, r.description, p) for preset, defs in PREDEFINED.items()
                 for r in defs for p in r.permissions]
        vocab = [(preset, scope, t, a) for preset, v in VOCABULARIES.items() for scope in ("organization", "tenant")
                 for t in v.types_for(scope) for a in v.actions]
        roles_tbl = pa.table(list(zip(*roles)), names=["preset", "role", "scope", "description", "permission"])
        vocab_tbl = pa.table(list(zip(*vocab)), names=["preset", "scope", "resource_type", "action"])
        self.con.execute("INSERT INTO predefined_roles SELECT * FROM roles_tbl")
        self.con.execute("INSERT INTO vocabulary SELECT * FROM vocab_tbl")

    # -- state ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The ledger position the warehouse's tables are complete up to."""
        position, _, intervals_at = self._state()
        return min(position, intervals_at)

    def pending(self) -> int:
        """How many of the ledger's events the warehouse does not hold yet."""
        return max(0, self.led.head() - self._state()[0])

    def _state(self) -> tuple[int, str | None, int]:
        with _duckdb_errors(f"cannot read the warehouse {self.path}"):
            row = self.con.execute("SELECT position, chain_link, intervals_position FROM sync_state WHERE id = 1"
                                   ).fetchall()[0]
        return int(row[0]), row[1], int(row[2])

    def _check_same_ledger(self, position: int, link: str | None, head: int) -> None:
        if position == 0:
            return
        if head < position:
            raise WarehouseMismatch(
                f"the warehouse {self.path} holds {position} events but the ledger has {head}: it was synced from "
                "another ledger (or the ledger was replaced); delete the warehouse file to rebuild it")
        if _link_at(self.led, position) != link:
            raise WarehouseMismatch(
                f"the warehouse {self.path} does not match this ledger at position {position}: it was synced from "
                "another ledger (or the ledger was rewritten; run `access-ledger verify`); delete the warehouse "
                "file to rebuild it")

    # -- sync -----------------------------------------------------------------------------

    def sync(self, progress: Callable[[int], None] | None = None, *, chunk_size: int = CHUNK,
             upto: int | None = None) -> int:
        """Bring the warehouse up to the ledger's head (or to position `upto`); return the number of new
        events synced.

        `progress(n)` is called after each committed chunk with the number of events it added.
        """
        import duckdb

        position, link, intervals_at = self._state()
        head = self.led.head() if upto is None else min(upto, self.led.head())
        self._check_same_ledger(position, link, head)
        if head > position or intervals_at < head:
            self.confirm()  # the file is proven before it changes
        try:
            with _private_files():
                if head > position:
                    # In position order: the events table keeps its insertion order (DuckDB's default),
                    # so a scan of it is in position order (the evidence export relies on that, and checks).
                    self._load(position, head, progress, chunk_size)
                if intervals_at < head:
                    self._build_intervals(intervals_at, head)
                if head > position:
                    # Compact the new rows into the file now, as part of the sync, not at some later close.
                    self.con.execute("CHECKPOINT")
                if self.recorded and (head > position or intervals_at < head or self._unrecorded):
                    self._record()
        except duckdb.Error as exc:
            _rollback(self.con)
            raise WarehouseError(f"cannot sync the warehouse {self.path}: {_first_line(str(exc))}") from None
        return head - position

    def _load(self, position: int, head: int, progress: Callable[[int], None] | None, chunk_size: int) -> None:
        if self.path == ":memory:":
            folder = tempfile.mkdtemp(prefix="access-ledger-sync-")
        else:
            # Beside the warehouse, whose lock this process holds: what a killed sync left there is cleared here.
            folder = f"{self.path}.sync"
            shutil.rmtree(folder, ignore_errors=True)
            os.mkdir(folder, 0o700)
        chunks: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_chunks, args=(position, head, chunk_size, folder, chunks, stop),
                                  name="warehouse-reader", daemon=True)
        reader.start()
        try:
            while True:
                item = chunks.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                path, first, last, link = item
                self.con.execute("BEGIN")
                self.con.execute(_LOAD, {"path": path})
                self.con.execute("UPDATE sync_state SET position = ?, chain_link = ?, synced_at = now() "
                                 "WHERE id = 1", [last, link])
                self.con.execute("COMMIT")
                os.unlink(path)
                if progress is not None:
                    progress(last - first + 1)
        finally:
            stop.set()
            while reader.is_alive():
                try:
                    chunks.get(timeout=0.05)
                except queue.Empty:
                    pass
            reader.join()
            shutil.rmtree(folder, ignore_errors=True)

    def _read_chunks(self, position: int, head: int, chunk_size: int, folder: str, chunks: queue.Queue[Any],
                     stop: threading.Event) -> None:
        """Reader thread: write each chunk of the log as JSONL with its positions; hand over (path, first, last)."""
        try:
            first = position + 1
            n = 0
            while first <= head and not stop.is_set():
                last = min(head, first + chunk_size - 1)
                data, link = _chunk_jsonl(self.led, first, last)
                path = os.path.join(folder, f"chunk-{n}.jsonl")  # in a folder only the owner can read
                with open(path, "wb") as f:
                    f.write(data)
                while not stop.is_set():
                    try:
                        chunks.put((path, first, last, link), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                first = last + 1
                n += 1
            chunks.put(None)
        except BaseException as exc:  # handed to the main thread, which raises it
            chunks.put(exc)

    def _build_intervals(self, lo: int, hi: int) -> None:
        self.con.execute("BEGIN")
        run_script(self.con, "intervals.sql", {"lo": lo, "hi": hi})
        self.con.execute("UPDATE sync_state SET intervals_position = ? WHERE id = 1", [hi])
        self.con.execute("COMMIT")

    # -- reading --------------------------------------------------------------------------

    def query(self, sql: str, params: dict[str, Any] | list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read query as dicts (for tests and small questions)."""
        cur = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of one warehouse table in a stable order (to compare two warehouses)."""
        if table not in _TABLES:
            raise WarehouseError(f"no warehouse table {table!r}")
        return sorted(self.con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)

    @staticmethod
    def tables() -> tuple[str, ...]:
        return _TABLES


def compare_with_events(led: AccessLedger, path: str | Path,
                        progress: Callable[[int], None] | None = None) -> list[str]:
    """The full check of a warehouse (for `verify`): one line per table whose rows differ from those a
    fresh sync of the same events gives; empty when every row of every table is the same.

    The warehouse is derived data: anyone who can write its file can change what the audits say. A
    scratch warehouse is synced from the ledger, up to the position the warehouse says it holds, in a
    temporary folder; then each table is compared with it as multisets of rows (EXCEPT ALL both ways).
    """
    import duckdb

    source = str(path)
    try:
        probe = duckdb.connect(source, read_only=True)
    except duckdb.Error as exc:
        return [f"the warehouse {source} cannot be read ({_first_line(str(exc))}): delete it to rebuild it"]
    try:
        position, link, intervals_at = probe.execute(
            "SELECT position, chain_link, intervals_position FROM sync_state WHERE id = 1").fetchall()[0]
        version = probe.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except (duckdb.Error, IndexError) as exc:
        return [f"the warehouse {source} has no sync state ({_first_line(str(exc))}): delete it to rebuild it"]
    finally:
        probe.close()
    if not version or version[0][0] != SCHEMA_VERSION:
        return []  # an older layout: it is dropped and synced again before any audit reads it
    if int(position) != int(intervals_at):
        return [f"the warehouse {source} holds events up to {position} but intervals up to {intervals_at}"]
    if int(position) > 0 and _link_at(led, int(position)) != link:
        return [f"the warehouse {source} does not match this ledger at position {position}"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="access-ledger-verify-") as folder:
        with Warehouse.open(led, os.path.join(folder, "scratch.duckdb"), scratch=True) as scratch:
            scratch.sync(progress, upto=int(position))
            con = scratch.con
            con.execute("ATTACH ? AS kept (READ_ONLY)", [source])
            try:
                foreign = foreign_objects(con, "kept")
                if foreign:
                    problems.append(f"the warehouse {source} holds {', '.join(foreign)}, which the ledger never "
                                    "creates; delete it to rebuild it")
                for table in _TABLES:
                    if table == "sync_state":
                        continue
                    cols = ", ".join(f'"{r[0]}"' for r in con.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'scratch' "
                        "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall())
                    # The file's id (a random key of its record in the ledger) is the one row not derived.
                    only = " WHERE key <> 'id'" if table == "meta" else ""
                    try:
                        extra = con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM kept.main.{table}{only} "
                                            f"EXCEPT ALL SELECT {cols} FROM main.{table}{only})").fetchall()[0][0]
                        missing = con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM main.{table}{only} "
                                              f"EXCEPT ALL SELECT {cols} FROM kept.main.{table}{only})"
                                              ).fetchall()[0][0]
                    except duckdb.Error as exc:
                        problems.append(f"warehouse table {table} cannot be compared ({_first_line(str(exc))})")
                        continue
                    if extra or missing:
                        problems.append(f"warehouse table {table}: {extra:,} row(s) that the events do not give and "
                                        f"{missing:,} they give are missing (edited); delete {source} to rebuild it")
            finally:
                con.execute("DETACH kept")
    return problems


def foreign_objects(con: Any, database: str | None = None) -> list[str]:
    """Objects of the warehouse file (`database`: an attached one) that the ledger never creates: tables
    not among its own, views and macros (a view or macro named like a table would be read in its place,
    and could read files). The ledger's own views and macros are TEMP: in no file."""
    db = "current_database()" if database is None else "?"
    params = [] if database is None else [database]
    found = [f"table {schema}.{name}" if schema != "main" else f"table {name}" for schema, name in con.execute(
        f"SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = {db} ORDER BY 1, 2", params
    ).fetchall() if schema != "main" or name not in _TABLES]
    found += [f"view {name}" for (name,) in con.execute(
        f"SELECT view_name FROM duckdb_views() WHERE database_name = {db} AND NOT internal ORDER BY 1", params
    ).fetchall()]
    found += [f"macro {name}" for (name,) in con.execute(
        f"SELECT DISTINCT function_name FROM duckdb_functions() WHERE database_name = {db} AND NOT internal "
        "AND function_type IN ('macro', 'table_macro') ORDER BY 1", params).fetchall()]
    found += [f"sequence {name}" for (name,) in con.execute(
        f"SELECT sequence_name FROM duckdb_sequences() WHERE database_name = {db} ORDER BY 1", params).fetchall()]
    return found


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _record_mac(key: bytes, file_id: str, position: int, link: str, digest: str) -> str:
    return hmac.new(key, f"warehouse:{file_id}:{position}:{link}:{digest}".encode(), hashlib.sha256).hexdigest()


def _link_at(led: AccessLedger, position: int) -> str | None:
    """The ledger's hash-chain link at `position`: it commits to every event up to there."""
    with led.store.transaction(write=False) as c:
        c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
        row = c.fetchone()
    return None if row is None else str(row[0])


def _chunk_jsonl(led: AccessLedger, first: int, last: int) -> tuple[bytes, str | None]:
    """Events first..last as JSONL lines with their positions, and the chain link at `last`.

    The lines are put together by the ledger's database in one query (a Python loop over the rows
    costs more than the whole DuckDB load); lines are told apart by the position written into each,
    so their order does not matter. Positions must be dense: a gap means a damaged log.
    """
    store = led.store
    pos, table = store.pos_col, store.table
    if store.postgres:
        text = "convert_from(state, 'UTF8')"
        line = f"'{{\"position\":' || {pos} || ',' || substr({text}, 2)"
        agg = f"string_agg({line}, E'\\n')"
    else:
        text = "CAST(state AS TEXT)"
        line = f"'{{\"position\":' || {pos} || ',' || substr({text}, 2)"
        agg = f"group_concat({line}, char(10))"
    with store.transaction(write=False) as c:
        c.execute(f"SELECT count(*), {agg} FROM {table} WHERE {pos} >= ? AND {pos} <= ?", (first, last))
        count, lines = c.fetchone()
        c.execute("SELECT link FROM al_chain WHERE position = ?", (last,))
        row = c.fetchone()
    if count != last - first + 1 or row is None:
        raise WarehouseError(f"the ledger's positions {first}-{last} are not all there: run `access-ledger verify`")
    return lines.encode() + b"\n", str(row[0])


@contextmanager
def _duckdb_errors(what: str) -> Iterator[None]:
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        raise WarehouseError(f"{what}: {_first_line(str(exc))}") from None


def _rollback(con: Any) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:  # no transaction was open
        pass


def _first_line(text: str) -> str:
    return (text.strip() or "unknown error").splitlines()[0]


__all__ = ["Warehouse", "default_path", "sql_text"]
