"""The DuckDB warehouse: the ledger's events in a flat table plus interval tables, synced exactly once.

Sync reads the notification log from the warehouse's position on, a chunk at a time. A reader
thread turns each part of a chunk into JSONL (positions written into the lines) and parses it with
pyarrow, in memory, while the main thread inserts the previous part; each chunk is one DuckDB transaction that
also records the new position, so an interrupted sync leaves whole chunks and the next run goes on
from there. The interval tables are then brought up to the same position in one more transaction
(rebuilding only the keys the new events touch).

The file is untrusted input (anyone who can write the folder can edit it), so before the first query:
- Regular files only: the file and its write-ahead log must be regular files (a FIFO or a device would
  block every reader), never followed through a symlink.
- The file read is the file proven: it is opened here first (O_NOFOLLOW) and kept open; once DuckDB has
  opened the path, /proc/locks must show the lock DuckDB takes on its database file held by this process
  on that same inode (st_dev, st_ino). POSIX locks belong to a process and an inode, and DuckDB opens one
  handle per database file, so a file swapped in while DuckDB opened the path (and swapped back after)
  shows no lock of ours on the inode held here. The proof's hash is read through this descriptor, so the
  bytes hashed are those of the inode the connection reads. (The descriptor stays open until DuckDB has
  closed: closing any descriptor of an inode drops the process's POSIX locks on it.)
- DuckDB runs with external access off, extension autoloading off and its configuration locked from the
  first statement on (no query can read or write a local file; the sync hands DuckDB each chunk as an
  Arrow table parsed in memory; audit files are written by a separate in-memory connection that holds
  no catalog of the file, see `copy_to`).
- The catalog is exactly the ledger's: every schema, table (its whole definition: column names, types,
  collations, defaults, constraints), column, view, macro, type, sequence, index and constraint is
  compared with those of warehouse.sql built in memory; anything else is refused and named by `verify`.
  A file of a layout this version does not know (another schema_version, or no meta) is removed with its
  write-ahead log and built from nothing, never dropped table by table (what a partial drop leaves, such as
  a macro, would stay).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.errors import WarehouseBusy, WarehouseError, WarehouseMismatch
from reports.sql_files import run_script, sql_text

if TYPE_CHECKING:
    from ledger.app import AccessLedger

SCHEMA_VERSION = "7"
CHUNK = 250_000
PART = 50_000  # events parsed and inserted at a time within a chunk
#: Events of the evidence export's in-memory warehouse per transaction (`fill`), each compressed by a CHECKPOINT
#: once committed. In memory, DuckDB compresses the rows of a small commit as it merges them into the table,
#: again for every commit that adds to the same row group (a commit per 16 MiB part took twice the CPU of the
#: whole load); a large transaction keeps its rows uncompressed until a CHECKPOINT compresses them once. Half a
#: million events (some 200 MB uncompressed) bounds what is held uncompressed at a time.
FILL_COMMIT = 500_000
LOCK_WAIT = 30.0
COPY_BATCH = 1 << 17  # rows a batch handed to an output file's writer (see Warehouse.copy_to)
#: The fields of DESIGN section 4, as read from the JSONL bytes (lists are the permission lists).
FIELDS: tuple[str, ...] = (
    "type",
    "at",
    "actor",
    "reason",
    "id",
    "name",
    "preset",
    "tenant",
    "display_name",
    "user",
    "email",
    "service_account",
    "team",
    "member",
    "role",
    "scope",
    "base",
    "permissions",
    "description",
    "add",
    "remove",
    "principal",
    "resource",
    "expires_at",
    "connector",
    "connector_type",
    "outcome",
    "context",
    "action",
    "token_id",
    "scopes",
    "api_key",
    "rotated_at",
    "last_login",
    "owner",
    "auth_method",
    "resource_types",
    "labels",
    "project",
    "finding",
    "audit",
    "kind",
    "cause",
    "until",
    "rule",
)
LIST_FIELDS = frozenset({"permissions", "add", "remove", "scopes", "resource_types", "labels"})
_LOAD = """
INSERT INTO events
SELECT position, type, "at"::TIMESTAMP, actor, reason, id, name, preset, tenant, display_name, "user", email,
       service_account, team, member, role, scope, base, permissions, description, "add", "remove", principal,
       resource, expires_at::TIMESTAMP, connector, connector_type, outcome, context, action,
       token_id, scopes, api_key, rotated_at::TIMESTAMP, last_login::TIMESTAMP, owner, auth_method,
       resource_types, labels, project, finding, audit, kind, cause, "until"::TIMESTAMP, rule,
       CASE
           WHEN type IN ('RoleAssigned', 'RoleUnassigned') THEN principal
           WHEN type IN ('TeamMemberAdded', 'TeamMemberRemoved') THEN member
           WHEN type IN ('UserCreated', 'UserDeactivated', 'UserReactivated') THEN 'user:' || "user"
           WHEN type IN ('ServiceAccountCreated', 'ServiceAccountDeactivated', 'ServiceAccountReactivated')
               THEN 'service_account:' || service_account
           WHEN type IN ('TeamCreated', 'TeamDeleted') THEN 'team:' || team
           WHEN type LIKE 'ApiKey%' THEN 'service_account:' || service_account
       END,
       CASE
           WHEN type = 'ResourceAccessed' THEN split_part(resource, '/', 1)
           WHEN type = 'ConnectorSecretAccessed' THEN 'service_connector'
       END
FROM sync_chunk
"""
_TABLES = (
    "meta",
    "sync_state",
    "events",
    "predefined_roles",
    "vocabulary",
    "principal_status",
    "tenants",
    "teams",
    "memberships",
    "roles",
    "role_permissions",
    "role_chain",
    "role_grants",
    "assignments",
    "connectors",
    "usage_totals",
)


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


def _regular(path: str, what: str = "warehouse") -> int | None:
    """Open `path` for reading, never through a symlink, and only if it is a regular file (None: no file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WarehouseError(f"cannot open the {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise WarehouseError(f"the {what} {path} is not a regular file (a symlink, FIFO or device): delete it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WarehouseError(f"the {what} {path} is not a regular file ({exc.strerror}): delete it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WarehouseError(f"the {what} {path} is not a regular file (a symlink, FIFO or device): delete it")
    return fd


def _check_journal(path: str) -> None:
    """The write-ahead log DuckDB replays as it opens `path`: absent or a regular file."""
    fd = _regular(path + ".wal", "warehouse's write-ahead log")
    if fd is not None:
        os.close(fd)


def _locked_here(fd: int) -> bool:
    """Whether this process holds a POSIX lock on the inode of `fd` (DuckDB locks the database file it opens)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pid = str(os.getpid())
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return True  # no /proc: nothing to bind the connection with (the hash by descriptor still holds)
    for line in lines:
        parts = line.split()
        # "1: POSIX  ADVISORY  WRITE 4242 fe:00:4243915 0 EOF" (a waiter's line has "->" in second place)
        if len(parts) >= 6 and parts[1] == "POSIX" and parts[4] == pid and parts[5].lower() == inode:
            return True
    return False


def _bind(fd: int, path: str) -> None:
    if not _locked_here(fd):
        raise WarehouseMismatch(
            f"the warehouse {path} was replaced while it was being opened (DuckDB opened "
            "another file than the one proven): run the command again, and look for who "
            "writes that folder"
        )


def _lock_down(con: Any, allowed: list[str] | None = None) -> None:
    """External access off and the configuration locked, before any other statement."""
    con.execute("SET enable_progress_bar = false")  # it would write into the audit's output on stdout
    if allowed:
        con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


_CONFIG = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}


def _connect(path: str, *, read_only: bool = False, allowed: list[str] | None = None) -> tuple[Any, int | None]:
    """A locked-down connection to `path`, and this process's own descriptor of the file it reads."""
    import duckdb

    fd = None
    if path != ":memory:":
        _check_journal(path)
        fd = _regular(path)
    deadline = time.monotonic() + LOCK_WAIT
    try:
        while True:
            try:
                with _private_files():
                    con = duckdb.connect(path, read_only=read_only, config=dict(_CONFIG))
                break
            except duckdb.IOException as exc:
                text = str(exc)
                if "lock" in text.lower() and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                if "lock" in text.lower():
                    raise WarehouseBusy(
                        f"the warehouse {path} is in use by another process; try again when it is done"
                    ) from None
                raise WarehouseError(f"cannot open the warehouse {path}: {_first_line(text)}") from None
            except duckdb.Error as exc:
                raise WarehouseError(f"cannot open the warehouse {path}: {_first_line(str(exc))}") from None
        try:
            _lock_down(con, allowed)
            if path != ":memory:":
                if fd is None:  # created by DuckDB just now
                    fd = _regular(path)
                    if fd is None:
                        raise WarehouseError(f"cannot open the warehouse {path}: it vanished as it was created")
                _bind(fd, path)
        except BaseException:
            con.close()
            raise
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return con, fd


class Warehouse:
    """A DuckDB file of the ledger's events and interval tables; `con` answers read queries."""

    def __init__(self, led: AccessLedger, con: Any, path: str, fd: int | None = None):
        self.led = led
        self.con = con
        self.path = path
        self._writer: Any = None
        self._allowed: list[str] | None = None
        self._fd = fd  # this process's descriptor of the file the connection reads (see the module docstring)
        self.recorded = False  # proven against, and recorded in, the ledger's al_warehouses (see open)
        self.proven: str | None = None  # the file's SHA-256 as proven (or recorded) in this run
        self._proof: tuple[threading.Thread, list[Any], str, tuple[Any, ...]] | None = None  # a hash under way
        self._unrecorded = False  # emptied in this run: recorded after the next sync
        self.rebuilt: str | None = None  # why the file was emptied to be synced afresh, if it was
        # Answers computed from the rows in this run, each with the position it was computed at (used only
        # while the warehouse is still at that position; never stored).
        self.derived: dict[str, tuple[int, Any]] = {}

    @classmethod
    def open(
        cls,
        led: AccessLedger,
        path: str | Path | None = None,
        *,
        scratch: bool = False,
        allowed: list[str] | None = None,
    ) -> Warehouse:
        """Open (or create) the warehouse of `led` at `path` (default: see default_path).

        A warehouse file is proven before it is used (see `sync`): its bytes must be those the ledger
        recorded after the last sync. A `scratch` warehouse (built and read in one run, then deleted)
        is neither proven nor recorded. `allowed`: the only files its queries may open (verify's ATTACH).
        """
        target = str(path) if path is not None else default_path(led)
        if target != ":memory:":
            parent = Path(target).resolve().parent
            if not parent.is_dir():
                raise WarehouseError(f"cannot create the warehouse {target}: folder {parent} does not exist")
        # A write-ahead log beside the file is replayed by DuckDB as it opens: changes its bytes never show.
        replayed = target != ":memory:" and os.path.exists(target + ".wal") and os.path.getsize(target + ".wal") > 0
        con, fd = _connect(target, allowed=allowed)
        wh = cls(led, con, target, fd)
        wh.recorded = target != ":memory:" and not scratch
        wh._allowed = allowed
        try:
            wh._prepare(replayed)
        except BaseException:
            wh.close()
            raise
        return wh

    def close(self) -> None:
        if self._proof is not None:
            self._proof[0].join()  # nothing is left reading the file
        try:
            self.con.close()
        except Exception:  # closing is best effort; every write was committed or rolled back
            pass
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fd is not None:  # only now: closing it drops the lock DuckDB holds on the file
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def _prepare(self, replayed: bool = False) -> None:
        import duckdb

        try:
            with _private_files():
                found = catalog(self.con)
                version = _layout_version(self.con, found)
                if found and version != SCHEMA_VERSION:
                    # A layout this version does not know: a new file, built from nothing.
                    self.rebuilt = (
                        f"its layout (schema version {version}) is not this version's ({SCHEMA_VERSION})"
                        if version is not None
                        else "its layout is not one this version knows"
                    )
                    self._create()
                elif not found:
                    self._create()
                else:
                    foreign = differences(found)
                    if foreign:
                        raise WarehouseMismatch(
                            f"the warehouse {self.path} holds {', '.join(foreign[:3])}, which the ledger never "
                            "creates (it could change what the audits read): delete the file to rebuild it"
                        )
                    if self.recorded:
                        self._prove(replayed)
                run_script(self.con, "effective.sql")
        except duckdb.Error as exc:
            _rollback(self.con)
            raise WarehouseError(f"cannot prepare the warehouse {self.path}: {_first_line(str(exc))}") from None

    def _create(self) -> None:
        """A new file, every table empty (never a partial drop: what a drop leaves, such as a macro, would
        stay); the file gets a new id (its record in the ledger is keyed by it)."""
        if self.path != ":memory:" and catalog(self.con):
            if self._proof is not None:
                self._proof[0].join()
                self._proof = None
            self.con.close()
            os.close(self._fd)
            self._fd = None
            for name in (self.path, self.path + ".wal"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            self.con, self._fd = _connect(self.path, allowed=self._allowed)
            if catalog(self.con):
                raise WarehouseMismatch(
                    f"the warehouse {self.path} was replaced as it was being rebuilt: run "
                    "the command again, and look for who writes that folder"
                )
        con = self.con
        con.execute("BEGIN")
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
        unproven = (
            "it has no id"
            if file_id is None
            else "a write-ahead log was replayed into it as it opened"
            if replayed
            else "the ledger holds no record of it"
            if record is None
            else f"it holds position {position}, the ledger recorded {record[0]} (an interrupted sync)"
            if (record[0], record[1]) != (position, link or "") or intervals_at != position
            # (a record made before the key was set; one stripped of its MAC gains nothing either)
            else f"its record has no MAC and {KEY_ENV} is set"
            if seal_key() is not None and record[3] is None
            else None
        )
        if unproven is not None:
            self.rebuilt = unproven
            self._create()
            return
        key = seal_key()
        if key is not None and record[3] != _record_mac(key, file_id, *record[:3]):
            raise WarehouseMismatch(
                f"the warehouse {self.path} was edited since its last sync (its record's MAC is missing or wrong "
                f"for the ledger's record at position {position}): delete the file to rebuild it, and run "
                "`access-ledger verify`"
            )
        # The record holds no size: a file grown past DuckDB's last block (a sparse tail of 50 GiB) would
        # be hashed to its end before it is refused. DuckDB's own block count bounds what is hashed.
        block_size, blocks = self.con.execute(
            "SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = current_database()"
        ).fetchone()
        size = os.fstat(self._fd).st_size if self._fd is not None else 0
        if size > _FILE_HEADERS + block_size * blocks + _SIZE_SLACK:
            raise WarehouseMismatch(
                f"the warehouse {self.path} holds {size:,} bytes, far past the {blocks:,} blocks DuckDB keeps in it: "
                "it was edited since its last sync; delete the file to rebuild it, and run `access-ledger verify`"
            )
        # The file is hashed while the audit's query runs (hashlib leaves the other core to DuckDB);
        # `confirm` waits for it, and every audit result, and every change to the file, waits for that.
        result: list[Any] = []
        fd = self._fd

        def digest() -> None:
            try:
                result.append(_fd_sha256(fd))
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
                f"recorded at position {position}): delete the file to rebuild it, and run `access-ledger verify`"
            )
        self.proven = result[0]

    def _record(self) -> None:
        """Write the file's record into the ledger (after a sync: the file holds exactly what it should)."""
        from ledger.errors import StorageError
        from ledger.integrity import seal_key

        self.con.execute("CHECKPOINT")  # every change in the file itself, none in a write-ahead log
        file_id = self._file_id()
        position, link, _ = self._state()
        digest = _fd_sha256(self._fd)
        key = seal_key()
        mac = None if key is None else _record_mac(key, file_id, position, link or "", digest)
        try:
            with self.led.store.transaction(write=True) as c:
                c.execute("DELETE FROM al_warehouses WHERE id = ?", (file_id,))
                c.execute(
                    "INSERT INTO al_warehouses (id, position, link, sha256, mac) VALUES (?, ?, ?, ?, ?)",
                    (file_id, position, link or "", digest, mac),
                )
        except StorageError:
            return  # a ledger this user may only read: the file stays unproven and is synced afresh next time
        self.proven = digest
        self._unrecorded = False

    def _fill_presets(self) -> None:
        import pyarrow as pa

        from ledger.vocabulary import PREDEFINED, VOCABULARIES

        roles = [
            (preset, r.name, r.scope, r.description, p)
            for preset, defs in PREDEFINED.items()
            for r in defs
            for p in r.permissions
        ]
        vocab = [
            (preset, scope, t, a)
            for preset, v in VOCABULARIES.items()
            for scope in ("organization", "tenant")
            for t in v.types_for(scope)
            for a in v.actions
        ]
        roles_tbl = pa.table(list(zip(*roles)), names=["preset", "role", "scope", "description", "permission"])
        vocab_tbl = pa.table(list(zip(*vocab)), names=["preset", "scope", "resource_type", "action"])
        for name, table in (("predefined_roles", roles_tbl), ("vocabulary", vocab_tbl)):
            self.con.register("preset_rows", table)  # (the connection resolves no Python variables by name)
            try:
                self.con.execute(f"INSERT INTO {name} SELECT * FROM preset_rows")
            finally:
                self.con.unregister("preset_rows")

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
            row = self.con.execute(
                "SELECT position, chain_link, intervals_position FROM sync_state WHERE id = 1"
            ).fetchall()[0]
        return int(row[0]), row[1], int(row[2])

    def _check_same_ledger(self, position: int, link: str | None, head: int) -> None:
        if position == 0:
            return
        if head < position:
            raise WarehouseMismatch(
                f"the warehouse {self.path} holds {position} events but the ledger has {head}: it was synced from "
                "another ledger (or the ledger was replaced); delete the warehouse file to rebuild it"
            )
        if _link_at(self.led, position) != link:
            raise WarehouseMismatch(
                f"the warehouse {self.path} does not match this ledger at position {position}: it was synced from "
                "another ledger (or the ledger was rewritten; run `access-ledger verify`); delete the warehouse "
                "file to rebuild it"
            )

    # -- sync -----------------------------------------------------------------------------

    def sync(
        self, progress: Callable[[int], None] | None = None, *, chunk_size: int = CHUNK, upto: int | None = None
    ) -> int:
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
        self._insert(self._log_parts(position, head, chunk_size), progress)

    def fill(self, parts: Iterable[tuple[Any, int, int]], last: int, link: str | None) -> None:
        """Fill an empty scratch warehouse with positions 1..`last` from `parts` (Arrow tables of
        _chunk_schema with their first and last positions, in position order, each position once),
        then its interval tables: the evidence export's own warehouse, filled from the rows its
        verifying walk read (no read of the ledger here)."""
        import duckdb

        if self.recorded or self._state()[0] != 0:
            raise WarehouseError("only an empty scratch warehouse is filled from verified rows")
        expected = [1]
        committed = [0]

        def checked() -> Iterator[tuple[Any, int, int, str | None, bool]]:
            for table, first, end in parts:
                if first != expected[0] or table.num_rows != end - first + 1:
                    raise WarehouseError(f"the verified rows {first}-{end} are not the next positions in order")
                expected[0] = end + 1
                # One transaction per FILL_COMMIT rows (see there), the last one at `last`.
                ends = end == last or end - committed[0] >= FILL_COMMIT
                if ends:
                    committed[0] = end
                yield table, first, end, link if end == last else None, ends
            if expected[0] != last + 1:
                raise WarehouseError(f"the verified rows end at {expected[0] - 1}, not at {last}")

        try:
            with _private_files():
                self._insert(checked(), None, compact=True)
                self._build_intervals(0, last)
        except duckdb.Error as exc:
            _rollback(self.con)
            raise WarehouseError(f"cannot fill the warehouse: {_first_line(str(exc))}") from None

    def _insert(
        self,
        source: Iterator[tuple[Any, int, int, str | None, bool]],
        progress: Callable[[int], None] | None,
        compact: bool = False,
    ) -> None:
        """Insert `source`'s (table, first, last, link, ends_chunk) items, read and parsed by a thread of their
        own while the previous one is inserted; each chunk is one transaction that records its position
        (and with `compact`, is compressed by a CHECKPOINT once committed: see FILL_COMMIT)."""
        chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._pump,
            args=(source, chunks, stop),
            name="warehouse-reader",
            daemon=True,
        )
        reader.start()
        open_at: int | None = None  # the first position of the chunk whose transaction is open
        try:
            while True:
                item = chunks.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                table, first, last, link, ends_chunk = item
                if open_at is None:
                    self.con.execute("BEGIN")
                    open_at = first
                self.con.register("sync_chunk", table)
                try:
                    self.con.execute(_LOAD)
                finally:
                    self.con.unregister("sync_chunk")
                if ends_chunk:
                    self.con.execute(
                        "UPDATE sync_state SET position = ?, chain_link = ?, synced_at = now() WHERE id = 1",
                        [last, link],
                    )
                    self.con.execute("COMMIT")
                    if compact:
                        self.con.execute("CHECKPOINT")
                    if progress is not None:
                        progress(last - open_at + 1)
                    open_at = None
        finally:
            stop.set()
            while reader.is_alive():
                try:
                    chunks.get(timeout=0.05)
                except queue.Empty:
                    pass
            reader.join()

    @staticmethod
    def _pump(source: Iterator[Any], chunks: queue.Queue[Any], stop: threading.Event) -> None:
        """Reader thread: hand over each item of `source` (None at the end, or the exception that ended it)."""
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        chunks.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(None)
        except BaseException as exc:  # handed to the main thread, which raises it
            chunks.put(exc)

    def _log_parts(self, position: int, head: int, chunk_size: int) -> Iterator[tuple[Any, int, int, str | None, bool]]:
        """Each part of the log after `position` up to `head` (JSONL with its positions) as an Arrow table,
        parsed in memory (DuckDB reads no file: its external access is off): (table, first, last, link,
        ends_chunk)."""
        first = position + 1
        while first <= head:
            end = min(head, first + chunk_size - 1)  # the chunk: one transaction
            # In parts, so that reading and parsing the next part overlaps DuckDB's insert of this one.
            last = min(end, first + PART - 1)
            data, link = _chunk_jsonl(self.led, first, last)
            yield parse_lines(data), first, last, link, last == end
            first = last + 1

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

    # -- files out ------------------------------------------------------------------------
    #
    # This connection can open no file; the audit files are written by another, in memory, that may
    # write files but holds no catalog of the warehouse file (it reads the rows as an Arrow stream).

    def writer(self) -> Any:
        """The in-memory connection that writes (and reads back) output files."""
        if self._writer is None:
            import duckdb

            self._writer = duckdb.connect(":memory:", config=dict(_CONFIG))
            self._writer.execute("SET enable_progress_bar = false")
        return self._writer

    def copy_to(self, select: str, target: str, options: str, even: bool = False) -> None:
        """COPY the rows of `select`, read from the warehouse, to the file `target` (COPY `options`).

        With `even`, the rows reach the writer in batches of COPY_BATCH rows each (but the last): a Parquet
        writer cuts its row groups where its input was cut, and a plain scan's batches are cut where the
        table's storage was cut (how its rows were inserted), so the same rows stored another way would give
        other bytes (a sort's output comes in even batches already)."""
        import pyarrow as pa

        reader = self.con.sql(select).to_arrow_reader(COPY_BATCH)
        if even:
            reader = pa.RecordBatchReader.from_batches(reader.schema, _even_batches(reader, COPY_BATCH))
        writer = self.writer()
        writer.register("copy_rows", reader)
        try:
            writer.execute(f"COPY (SELECT * FROM copy_rows) TO '{target}' ({options})")
        finally:
            writer.unregister("copy_rows")


def _even_batches(batches: Iterable[Any], size: int) -> Iterator[Any]:
    """The rows of `batches` (Arrow record batches) again, in batches of `size` rows each but the last."""
    import pyarrow as pa

    held: list[Any] = []
    rows = 0
    for batch in batches:
        if not held and batch.num_rows == size:
            yield batch
            continue
        held.append(batch)
        rows += batch.num_rows
        while rows >= size:
            joined = pa.Table.from_batches(held).combine_chunks()
            yield from joined.slice(0, size).to_batches()
            rest = joined.slice(size)
            held, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield from pa.Table.from_batches(held).combine_chunks().to_batches()


def compare_with_events(
    led: AccessLedger, path: str | Path, progress: Callable[[int], None] | None = None
) -> list[str]:
    """The full check of a warehouse (for `verify`): one line per table whose rows differ from those a
    fresh sync of the same events gives; empty when every row of every table is the same.

    The warehouse is derived data: anyone who can write its file can change what the audits say. A
    scratch warehouse is synced from the ledger, up to the position the warehouse says it holds, in a
    temporary folder; then each table is compared with it as multisets of rows (EXCEPT ALL both ways).
    """
    import duckdb

    source = str(path)
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="access-ledger-verify-") as folder:
            # The scratch connection may open the kept file (and its log) only, read-only; this process's
            # own descriptor of it binds what DuckDB attaches to what is checked (as in Warehouse.open).
            with Warehouse.open(
                led, os.path.join(folder, "scratch.duckdb"), scratch=True, allowed=[source, source + ".wal"]
            ) as scratch:
                _check_journal(source)
                fd = _regular(source)
                if fd is None:
                    return [f"the warehouse {source} vanished while it was being checked"]
                con = scratch.con
                try:
                    try:
                        con.execute("ATTACH ? AS kept (READ_ONLY)", [source])
                    except duckdb.Error as exc:
                        return [
                            f"the warehouse {source} cannot be read ({_first_line(str(exc))}): delete it to rebuild it"
                        ]
                    try:
                        _bind(fd, source)
                        problems = _compare(led, scratch, source, progress)
                    finally:
                        con.execute("DETACH kept")
                finally:
                    os.close(fd)
    except WarehouseError as exc:
        return [str(exc)]
    except duckdb.Error as exc:
        return [f"the warehouse {source} cannot be checked ({_first_line(str(exc))}): delete it to rebuild it"]
    return problems


def _compare(led: AccessLedger, scratch: Warehouse, source: str, progress: Callable[[int], None] | None) -> list[str]:
    """verify's comparison of the attached file `kept` with the scratch warehouse, synced here."""
    import duckdb

    con = scratch.con
    found = catalog(con, "kept")
    version = _layout_version(con, found, "kept")
    if version != SCHEMA_VERSION:
        shown = "it has none" if version is None else f"schema version {version}, this version's is {SCHEMA_VERSION}"
        return [
            f"the warehouse {source} has a layout this version does not know ({shown}): the next audit builds "
            "it afresh from nothing; delete it to rebuild it now"
        ]
    foreign = differences(found)
    if foreign:
        # Nothing more is read from it: its columns' collations and types would rule the comparison.
        return [
            f"the warehouse {source} holds {', '.join(foreign)}, which the ledger never creates; delete it "
            "to rebuild it"
        ]
    try:
        position, link, intervals_at = con.execute(
            "SELECT position, chain_link, intervals_position FROM kept.main.sync_state WHERE id = 1"
        ).fetchall()[0]
    except IndexError:
        return [f"the warehouse {source} has no sync state: delete it to rebuild it"]
    if int(position) != int(intervals_at):
        return [f"the warehouse {source} holds events up to {position} but intervals up to {intervals_at}"]
    if int(position) > 0 and _link_at(led, int(position)) != link:
        return [f"the warehouse {source} does not match this ledger at position {position}"]
    problems: list[str] = []
    scratch.sync(progress, upto=int(position))
    for table in _TABLES:
        if table == "sync_state":
            continue
        cols = ", ".join(
            f'"{r[0]}"'
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'scratch' "
                "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
        )
        # The file's id (a random key of its record in the ledger) is the one row not derived.
        only = " WHERE key <> 'id'" if table == "meta" else ""
        try:
            extra = con.execute(
                f"SELECT count(*) FROM (SELECT {cols} FROM kept.main.{table}{only} "
                f"EXCEPT ALL SELECT {cols} FROM main.{table}{only})"
            ).fetchall()[0][0]
            missing = con.execute(
                f"SELECT count(*) FROM (SELECT {cols} FROM main.{table}{only} "
                f"EXCEPT ALL SELECT {cols} FROM kept.main.{table}{only})"
            ).fetchall()[0][0]
        except duckdb.Error as exc:
            problems.append(f"warehouse table {table} cannot be compared ({_first_line(str(exc))})")
            continue
        if extra or missing:
            problems.append(
                f"warehouse table {table}: {extra:,} row(s) that the events do not give and "
                f"{missing:,} they give are missing (edited); delete {source} to rebuild it"
            )
    return problems


# Every object of a database's catalog, each as (kind, name, definition). The catalog functions are
# named with their schema: a macro of the file named like one would otherwise be called in its place.
_CATALOG = (
    ("schema", "SELECT schema_name, '' FROM system.main.duckdb_schemas() WHERE database_name = $db AND NOT internal"),
    (
        "table",
        "SELECT schema_name || '.' || table_name, sql FROM system.main.duckdb_tables() WHERE database_name = $db",
    ),
    (
        "column",
        "SELECT schema_name || '.' || table_name || '.' || column_name, concat_ws('|', column_index, data_type, "
        "column_default, is_nullable, numeric_precision, numeric_scale) FROM system.main.duckdb_columns() "
        "WHERE database_name = $db",
    ),
    (
        "view",
        "SELECT schema_name || '.' || view_name, sql FROM system.main.duckdb_views() WHERE database_name = $db "
        "AND NOT internal",
    ),
    (
        "macro",
        "SELECT schema_name || '.' || function_name, concat_ws('|', function_type, macro_definition, "
        "parameters::VARCHAR) FROM system.main.duckdb_functions() WHERE database_name = $db AND NOT internal",
    ),
    (
        "type",
        "SELECT schema_name || '.' || type_name, logical_type FROM system.main.duckdb_types() "
        "WHERE database_name = $db AND NOT internal",
    ),
    (
        "sequence",
        "SELECT schema_name || '.' || sequence_name, sql FROM system.main.duckdb_sequences() WHERE database_name = $db",
    ),
    (
        "index",
        "SELECT schema_name || '.' || index_name, concat_ws('|', table_name, sql) FROM "
        "system.main.duckdb_indexes() WHERE database_name = $db",
    ),
    (
        "constraint",
        "SELECT schema_name || '.' || table_name || '.' || constraint_type, concat_ws('|', "
        "constraint_text, constraint_column_names::VARCHAR) FROM system.main.duckdb_constraints() "
        "WHERE database_name = $db",
    ),
)


def catalog(con: Any, database: str | None = None) -> frozenset[tuple[str, str, str]]:
    """Every object in the catalog of `database` (default: the connection's own file)."""
    if database is None:
        database = con.execute("SELECT system.main.current_database()").fetchall()[0][0]
    found: set[tuple[str, str, str]] = set()
    for kind, sql in _CATALOG:
        found.update(
            (kind, str(name), str(definition)) for name, definition in con.execute(sql, {"db": database}).fetchall()
        )
    return frozenset(found)


@cache
def expected_catalog() -> frozenset[tuple[str, str, str]]:
    """The catalog warehouse.sql builds (in memory, once per process): the only one a file may have."""
    import duckdb

    con = duckdb.connect(":memory:", config=dict(_CONFIG))
    try:
        _lock_down(con)
        run_script(con, "warehouse.sql")
        return catalog(con)
    finally:
        con.close()


def differences(found: frozenset[tuple[str, str, str]]) -> list[str]:
    """The objects of a catalog that are not the ledger's own, or not as it makes them, one phrase each."""
    expected = expected_catalog()
    names = {(k, n) for k, n, _ in expected}
    out = []
    for kind, name, _ in sorted(found - expected):
        shown = name.removeprefix("main.")
        out.append(f"{kind} {shown!r}" + (" (changed)" if (kind, name) in names else ""))
    for kind, name, _ in sorted(expected - found):
        if not any((k, n) == (kind, name) for k, n, _ in found):
            out.append(f"no {kind} {name[5:]!r}")
    return list(dict.fromkeys(out))


def _layout_version(con: Any, found: frozenset[tuple[str, str, str]], database: str = "main") -> str | None:
    """The file's schema_version, read only when its meta table is exactly the ledger's (else None)."""
    meta = {(k, n, d) for k, n, d in expected_catalog() if n == "main.meta" or n.startswith("main.meta.")}
    if not meta <= found or {(k, n) for k, n, _ in found if n == "main.meta" or n.startswith("main.meta.")} != {
        (k, n) for k, n, _ in meta
    }:
        return None
    prefix = "" if database == "main" else f"{database}."
    rows = con.execute(f"SELECT value FROM {prefix}main.meta WHERE key = 'schema_version'").fetchall()
    return str(rows[0][0]) if rows else None


def foreign_objects(con: Any, database: str | None = None) -> list[str]:
    """Objects of the warehouse file (`database`: an attached one) that the ledger never creates, or not
    as it creates them."""
    return differences(catalog(con, database))


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


_FILE_HEADERS = 3 * 4096  # DuckDB's main header and its two database headers, before the first block
_SIZE_SLACK = 64 << 20  # room for a layout that keeps a little more than its blocks: never a full hash


def _fd_sha256(fd: int | None) -> str:
    """The SHA-256 of the file behind `fd`, read with pread (no offset shared, the descriptor kept open)."""
    if fd is None:
        raise WarehouseError("the warehouse has no file to prove")
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 22, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def _record_mac(key: bytes, file_id: str, position: int, link: str, digest: str) -> str:
    return hmac.new(key, f"warehouse:{file_id}:{position}:{link}:{digest}".encode(), hashlib.sha256).hexdigest()


def _link_at(led: AccessLedger, position: int) -> str | None:
    """The ledger's hash-chain link at `position`: it commits to every event up to there."""
    with led.store.transaction(write=False) as c:
        c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
        row = c.fetchone()
    return None if row is None else str(row[0])


@cache
def _chunk_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("position", pa.int64())] + [(f, pa.list_(pa.string()) if f in LIST_FIELDS else pa.string()) for f in FIELDS]
    )


def parse_lines(data: bytes) -> Any:
    """JSONL bytes as an Arrow table of the FIELDS columns (fields not among them are ignored) and a
    position column (null where a line does not carry its position)."""
    import io

    import pyarrow.json as pj

    return pj.read_json(
        io.BytesIO(data),
        read_options=pj.ReadOptions(block_size=1 << 20),
        parse_options=pj.ParseOptions(explicit_schema=_chunk_schema(), unexpected_field_behavior="ignore"),
    )


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
