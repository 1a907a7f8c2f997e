"""Reliability: concurrent writers, a killed import, and hostile input (issue: guarantees)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import errors as E
from ledger.app import AccessLedger
from ledger.events import parse_json
from ledger.timeutil import format_instant, now

# -- concurrency ---------------------------------------------------------------------------


def _writer(url: str, tag: str, singles: int, batches: int, batch: int, out) -> None:
    """Append singles change commands and batches imports of `batch` access events, retrying as a client would."""
    failures: list[str] = []
    led = AccessLedger.open(url)
    for i in range(singles):
        while True:
            try:
                led.create_user(f"{tag}-{i}", actor=f"user:{tag}")
                break
            except E.ConcurrentWrite:
                continue  # retryable by definition: nothing was written
            except E.LedgerError as exc:
                failures.append(f"single {i}: {exc}")
                break
    for b in range(batches):
        while True:
            stamp = format_instant(now())  # stamped just before sending, as the platform would
            lines = [
                orjson.dumps(
                    {
                        "type": "ResourceAccessed",
                        "at": stamp,
                        "actor": "system",
                        "principal": f"user:{tag}-{b % singles}",
                        "tenant": "prod",
                        "resource": "model/m",
                        "action": "read",
                        "outcome": "allowed",
                        "id": f"{tag}-{b}-{k}",
                    }
                )
                for k in range(batch)
            ]
            try:
                led.import_lines(lines)
                break
            except (E.ConcurrentWrite, E.OutOfOrder):
                # OutOfOrder: the other writer recorded a later event first; re-stamp and send again.
                continue
            except E.LedgerError as exc:
                failures.append(f"batch {b}: {exc}")
                break
    led.close()
    out.put(failures)


def _impatient(url: str, tag: str, n: int, out) -> None:
    """Create n users as a client that never retries: each failure is reported."""
    failures: list[str] = []
    with AccessLedger.open(url) as led:
        for i in range(n):
            try:
                led.create_user(f"{tag}-{i}", actor=f"user:{tag}")
            except E.LedgerError as exc:
                failures.append(f"{i}: {exc}")
    out.put(failures)


def test_two_processes_writing_at_once_wait_their_turn(ledger_url):
    """A write waits for the other process's write to end (up to the lock timeout), never fails at once: on SQLite,
    a write that began by reading (the schema check) read a snapshot, and another process's commit in between made
    its first write fail at once with "another writer held the ledger too long"."""
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(at="2026-01-01T00:00:00Z")
        before = led.head()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_impatient, args=(ledger_url, tag, 150, out)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    failures = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert failures == [[], []]
    with AccessLedger.open(ledger_url) as led:
        assert led.head() == before + 2 * 150 and led.verify().ok


@pytest.mark.slow
def test_two_processes_appending_at_once_lose_and_duplicate_nothing(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    led.init(at="2026-01-01T00:00:00Z")
    led.create_tenant("prod", at="2026-01-01T00:00:00Z")
    led.close()
    singles, batches, batch = 500, 19, 500  # 10,000 events per process
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(ledger_url, tag, singles, batches, batch, out)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    failures = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert failures == [[], []]
    led = AccessLedger.open(ledger_url)
    try:
        events = list(led.read())
        assert len(events) == 2 + 2 * (singles + batches * batch)
        assert [p for p, _ in events] == list(range(1, len(events) + 1))
        ats = [e["at"] for _, e in events]
        assert ats == sorted(ats)
        ids = [e["id"] for _, e in events if "id" in e]
        assert len(ids) == len(set(ids)) == 2 * batches * batch
        users = {e["user"] for _, e in events if e["type"] == "UserCreated"}
        assert users == {f"{t}-{i}" for t in "ab" for i in range(singles)}
        assert led.verify().ok
    finally:
        led.close()


# -- a killed import ----------------------------------------------------------------------


def _big_history(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        f.write(
            orjson.dumps(
                {
                    "type": "OrganizationCreated",
                    "at": "2026-01-01T00:00:00Z",
                    "actor": "system",
                    "name": "acme",
                    "preset": "zenml-pro",
                    "id": "org",
                }
            )
            + b"\n"
        )
        f.write(
            orjson.dumps(
                {"type": "TenantCreated", "at": "2026-01-01T00:00:00Z", "actor": "system", "tenant": "prod", "id": "t"}
            )
            + b"\n"
        )
        f.write(
            orjson.dumps(
                {"type": "UserCreated", "at": "2026-01-01T00:00:00Z", "actor": "system", "user": "alice", "id": "u"}
            )
            + b"\n"
        )
        for i in range(n):
            f.write(
                orjson.dumps(
                    {
                        "type": "ResourceAccessed",
                        "at": f"2026-01-02T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
                        if i < 86400
                        else "2026-01-03T00:00:00Z",
                        "actor": "system",
                        "principal": "user:alice",
                        "tenant": "prod",
                        "resource": f"model/m{i % 7}",
                        "action": "read",
                        "outcome": "allowed",
                        "id": f"a{i}",
                    }
                )
                + b"\n"
            )


def _exe() -> str:
    return os.path.join(os.path.dirname(sys.executable), "access-ledger")


KILL_EVENTS = 100_000  # 100,003 lines, about 20 MB


def _writer_is_inside_its_transaction(url: str) -> bool:
    """True once the importer holds the ledger's write lock: SQLite's, or the head row it locks first
    thing in its transaction on PostgreSQL (SELECT ... FOR UPDATE: a RowShareLock on al_head)."""
    if "://" not in url:
        con = sqlite3.connect(url, timeout=0)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return False
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        finally:
            con.close()
    import psycopg

    base, _, query = url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&"))["schema"]
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = 'al_head' AND l.mode = 'RowShareLock' AND l.granted",
            (schema,),
        ).fetchone()
    return bool(row and row[0])


def _kill_import_midway(url: str, history: Path) -> None:
    """Run `access-ledger import -` fed through a pipe that is never closed, and SIGKILL it once it is
    inside its write transaction with most of the file read: it cannot have committed, whatever the timing."""
    data = history.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) * 85 // 100) + 1
    proc = subprocess.Popen(
        [_exe(), "--db", url, "import", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(data[:cut])  # returns once the importer has read all but a pipe's worth
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not _writer_is_inside_its_transaction(url):
            assert proc.poll() is None, "the import ended before all of its input was there"
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass


def _import(url: str, path: Path) -> None:
    done = subprocess.run([_exe(), "--db", url, "import", str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("already", ["nothing", "first half"])
def test_a_killed_import_leaves_the_ledger_as_it_was_and_its_rerun_completes(url_factory, tmp_path, already):
    """Deterministic both ways: the kill lands inside the import's transaction (its input is not even
    complete), on an empty ledger (the re-run takes the empty-ledger path) and on one that already holds
    the file's first half (the re-run looks up every id and skips what is there)."""
    history = tmp_path / "big.jsonl"
    _big_history(history, KILL_EVENTS)
    lines = history.read_bytes().splitlines(keepends=True)
    killed = url_factory("killed")
    before = 0
    if already == "first half":
        half = tmp_path / "half.jsonl"
        half.write_bytes(b"".join(lines[: len(lines) // 2]))
        _import(killed, half)
        before = len(lines) // 2
    else:
        AccessLedger.open(killed, create=True).close()
    _kill_import_midway(killed, history)
    with AccessLedger.open(killed) as led:
        assert led.head() == led.count() == before
        assert led.verify().ok
    started = time.monotonic()
    _import(killed, history)
    rerun = time.monotonic() - started
    reference = url_factory("reference")
    _import(reference, history)
    a, b = AccessLedger.open(killed), AccessLedger.open(reference)
    try:
        assert a.head() == b.head() == len(lines)
        assert list(a.export_lines()) == list(b.export_lines())
        assert a.store.head()[2] == b.store.head()[2]  # the same chain, link for link
        assert a.verify().ok
    finally:
        a.close()
        b.close()
    assert rerun < 60, f"the re-run took {rerun:.0f} s"


# -- hostile input ------------------------------------------------------------------------

NASTY = st.sampled_from(
    [
        "",
        " ",
        "a" * 5000,
        "x\x00y",
        "tab\tname",
        "new\nline",
        "'; DROP TABLE stored_events; --",
        "$(rm -rf /)",
        "`id`",
        '"quoted"',
        "semi;colon",
        "back\\slash",
        "ünïcødé",
        "\u202e",
        "user:",
        ":",
        "/",
        "model/",
        "*",
    ]
)
TIMES = st.sampled_from(
    [
        "2026-01-05T00:00:00Z",
        "2026-01-05T00:00:00",
        "2026-01-05",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2999-01-01T00:00:00+00:00",
        "2025-12-31T23:59:59Z",
        "not a time",
        "2026-02-30T00:00:00Z",
        "2026-01-05T00:00:00+14:00",
        "2026-01-05T00:00:00.123456Z",
    ]
)
VALUES = st.one_of(
    NASTY,
    TIMES,
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(NASTY, max_size=3),
    st.dictionaries(NASTY, NASTY, max_size=2),
    st.text(max_size=30),
)
TYPES = st.sampled_from(
    [
        "UserCreated",
        "RoleAssigned",
        "RoleCreated",
        "TenantCreated",
        "ConnectorSecretAccessed",
        "ResourceAccessed",
        "TeamMemberAdded",
        "Bogus",
        "",
    ]
)
FIELDS = st.sampled_from(
    [
        "user",
        "role",
        "principal",
        "tenant",
        "resource",
        "scope",
        "permissions",
        "connector",
        "outcome",
        "member",
        "team",
        "action",
        "expires_at",
        "secret",
        "password",
        "reason",
        "id",
    ]
)


@st.composite
def event_lines(draw) -> bytes:
    obj = {"type": draw(TYPES), "at": draw(TIMES), "actor": draw(st.sampled_from(["system", "user:root", "root"]))}
    for _ in range(draw(st.integers(0, 5))):
        obj[draw(FIELDS)] = draw(VALUES)
    if draw(st.booleans()):
        del obj[draw(st.sampled_from(["type", "at", "actor"]))]
    raw = json.dumps(obj).encode()
    mangle = draw(st.integers(0, 9))
    if mangle == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mangle == 1:
        raw = draw(st.binary(max_size=40))
    return raw


@settings(max_examples=10_000, deadline=None)
@given(line=event_lines())
def test_fuzz_every_import_line_is_an_event_or_one_clear_error(line):
    try:
        event = parse_json(line)
    except E.ValidationError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return
    assert event["type"] and event["at"].endswith("Z")


@pytest.fixture(scope="module")
def fuzz_ledger(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    led = AccessLedger.open(path, create=True)
    led.init(at="2026-01-01T00:00:00Z")
    led.create_tenant("prod", at="2026-01-01T00:00:00Z")
    led.create_user("root", at="2026-01-01T00:00:00Z")
    yield led
    led.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(event_lines(), min_size=1, max_size=4))
def test_fuzz_import_never_writes_part_of_a_refused_file(fuzz_ledger, lines):
    before = fuzz_ledger.head(), fuzz_ledger.store.head()[2]
    try:
        result = fuzz_ledger.import_lines(lines)
    except E.LedgerError as exc:
        assert str(exc).startswith("line ") and "\n" not in str(exc)
        assert (fuzz_ledger.head(), fuzz_ledger.store.head()[2]) == before
        return
    assert fuzz_ledger.head() == before[0] + result.written


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    args=st.lists(
        st.one_of(
            NASTY,
            TIMES,
            st.sampled_from(
                ["--tenant", "--to", "--at", "--resource", "-p", "--expires-at", "prod", "user:root", "viewer"]
            ),
        ),
        max_size=6,
    ),
    group=st.sampled_from(
        [
            ["role", "assign"],
            ["role", "create"],
            ["user", "create"],
            ["tenant", "create"],
            ["access", "record"],
            ["connector", "access"],
            ["team", "add-member"],
        ]
    ),
)
def test_fuzz_cli_arguments_end_in_success_or_one_error_line(tmp_path_factory, args, group):
    from typer.testing import CliRunner

    from access_ledger.cli import app

    db = str(tmp_path_factory.getbasetemp() / "cli-fuzz.db")
    runner = CliRunner()
    if not os.path.exists(db):
        assert runner.invoke(app, ["--db", db, "init"]).exit_code == 0
        assert runner.invoke(app, ["--db", db, "tenant", "create", "prod", "--actor", "system"]).exit_code == 0
        # The actor of the commands below: change commands take only a recorded principal (or system).
        assert runner.invoke(app, ["--db", db, "user", "create", "root", "--actor", "system"]).exit_code == 0
    led = AccessLedger.open(db)
    before = led.head()
    led.close()
    result = runner.invoke(app, ["--db", db, *group, *args], env={"ACCESS_LEDGER_ACTOR": "user:root"})
    assert "Traceback" not in result.output
    led = AccessLedger.open(db)
    try:
        if result.exit_code == 0:
            assert led.head() == before + 1
        else:
            assert result.exit_code == 2, result.output
            assert len(result.stderr.strip().splitlines()) == 1
            assert result.stderr.startswith("Error: ")
            assert led.head() == before
        assert led.verify().ok
    finally:
        led.close()


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB file system: a real full disk (needs root to mount; CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a tmpfs")
        pytest.skip("needs root to mount a tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_gives_a_clear_error_and_no_corruption(tiny_disk, tmp_path):
    db = tiny_disk / "full.db"
    history = tmp_path / "h.jsonl"
    _big_history(history, 20_000)  # far more than 1 MiB once stored
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"".join(history.open("rb").readlines()[:3]))
    first = subprocess.run([_exe(), "--db", str(db), "import", str(small)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    done = subprocess.run(
        [_exe(), "--db", str(db), "import", str(history)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr == f"Error: no space left for the ledger {db}: nothing was written\n"
    led = AccessLedger.open(str(db))
    try:
        assert led.head() == 3
        assert led.verify().ok
    finally:
        led.close()


@pytest.mark.slow
def test_an_import_whose_input_pauses_inside_its_transaction_completes(url_factory, tmp_path):
    """`import -` holds its one transaction open while it waits for input (a platform streaming its events,
    or a parser working ahead on a busy machine): a pause of several seconds must not end the session."""
    history = tmp_path / "small.jsonl"
    _big_history(history, 30_000)
    data = history.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) // 2) + 1
    url = url_factory("paused")
    AccessLedger.open(url, create=True).close()
    proc = subprocess.Popen(
        [_exe(), "--db", url, "import", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    proc.stdin.write(data[:cut])
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not _writer_is_inside_its_transaction(url):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(8)  # longer than eventsourcing's default limit for a session idle in a transaction (5 s)
    out, err = proc.communicate(data[cut:], timeout=300)
    assert proc.returncode == 0, err.decode()
    with AccessLedger.open(url) as led:
        assert led.head() == 30_003 and led.verify(derived=False).ok
