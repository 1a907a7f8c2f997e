"""Shared fixtures: every ledger test runs on SQLite and, when a server is given, on PostgreSQL.

ACCESS_LEDGER_TEST_PG names a PostgreSQL server (postgresql://user@host:port/db); each test gets
its own schema there. Under CI (CI=true) the PostgreSQL runs are required: a missing server is an
error, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG = os.environ.get("ACCESS_LEDGER_TEST_PG")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if IN_CI and not PG:
    raise pytest.UsageError("CI=true but ACCESS_LEDGER_TEST_PG is not set: the PostgreSQL runs may not be skipped")

BACKENDS = ["sqlite"] + (["postgres"] if PG else [])

# A pytest-xdist worker ignores SIGINT (its controller handles Ctrl-C), and an ignored signal stays
# ignored in every process it starts: the commands the Ctrl-C tests interrupt would never hear it.
# A handled signal is reset to its default in a new program, so the commands start as from a shell.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _own_working_folder(tmp_path_factory) -> Iterator[None]:
    """Each test process works in a folder of its own: a PostgreSQL ledger's warehouse defaults to the
    working folder (`./access-ledger-warehouse.duckdb`), and two processes sharing one would see it
    replaced under them. The tests name every other file by an absolute path."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(old)


# typer's CliRunner builds the whole click command tree from the app's signatures on every invoke (about
# 0.3 s of the suite's time per call: most of a CLI test). The tree is a pure function of the app, which is
# built once at import, so each app's tree is built once per test process and reused.
def _command_once() -> None:
    import typer.main
    import typer.testing

    built: dict[int, tuple[object, object]] = {}

    def get_command(typer_instance):  # noqa: ANN001, ANN202 - typer's own signature
        held = built.get(id(typer_instance))
        if held is None or held[0] is not typer_instance:
            held = built[id(typer_instance)] = (typer_instance, typer.main.get_command(typer_instance))
        return held[1]

    typer.testing._get_command = get_command


_command_once()


# Every PostgreSQL session the tests open, in this process or in the commands they run, ends a
# statement that runs away (or a transaction left idle) instead of hanging the run: libpq reads
# PGOPTIONS. The largest statement of the suite takes well under a second.
if PG:
    os.environ["PGOPTIONS"] = " ".join(
        filter(
            None,
            [
                os.environ.get("PGOPTIONS", ""),
                "-c statement_timeout=120s",
                "-c idle_in_transaction_session_timeout=300s",
            ],
        )
    )


def _drop_schema(schema: str) -> None:
    """Drop a test's schema, first ending any session that still holds a lock in it (a command a
    failed test left running would otherwise keep DROP SCHEMA waiting)."""
    import psycopg

    assert PG is not None
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        for attempt in range(5):
            conn.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND l.pid <> pg_backend_pid() GROUP BY l.pid",
                (schema,),
            )
            try:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                return
            except psycopg.errors.LockNotAvailable:
                if attempt == 4:
                    raise


def make_url(backend: str, tmp_path, name: str = "ledger") -> tuple[str, str | None]:
    """A fresh ledger URL for the backend, and the PostgreSQL schema to drop afterwards."""
    if backend == "sqlite":
        return str(tmp_path / f"{name}.db"), None
    schema = f"t_{uuid.uuid4().hex[:16]}"
    sep = "&" if "?" in PG else "?"  # type: ignore[operator]
    return f"{PG}{sep}schema={schema}", schema


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def ledger_url(backend, tmp_path) -> Iterator[str]:
    """A URL for a new, empty ledger on each backend."""
    url, schema = make_url(backend, tmp_path)
    yield url
    if schema:
        _drop_schema(schema)


@pytest.fixture
def url_factory(backend, tmp_path) -> Iterator:
    """Make several fresh ledger URLs on the same backend (e.g. export from one, import into another)."""
    schemas: list[str] = []

    def make(name: str = "ledger") -> str:
        url, schema = make_url(backend, tmp_path, f"{name}-{uuid.uuid4().hex[:6]}")
        if schema:
            schemas.append(schema)
        return url

    yield make
    for schema in schemas:
        _drop_schema(schema)


@pytest.fixture
def led(ledger_url):
    """An initialised zenml-pro ledger whose events are dated from 2026-01-01."""
    from ledger.app import AccessLedger

    ledger = AccessLedger.open(ledger_url, create=True)
    ledger.init(org="acme", at="2026-01-01T00:00:00Z")
    yield ledger
    ledger.close()


def pytest_report_header(config) -> str:
    where = f" (PostgreSQL at {PG})" if PG else " (set ACCESS_LEDGER_TEST_PG to add PostgreSQL)"
    return f"access-ledger backends: {', '.join(BACKENDS)}{where}"


def pytest_terminal_summary(terminalreporter) -> None:
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("passed", []):
        for backend in ("sqlite", "postgres"):
            if f"[{backend}" in report.nodeid or f"-{backend}]" in report.nodeid or f"-{backend}-" in report.nodeid:
                counts[backend] = counts.get(backend, 0) + 1
    if counts:
        terminalreporter.write_line("passed per backend: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@pytest.fixture(autouse=True)
def _no_warehouse_left_in_the_working_folder() -> Iterator[None]:
    """A PostgreSQL ledger's default warehouse is ./access-ledger-warehouse.duckdb: one a test left in the
    working folder would be another ledger's warehouse for the next test (and refused there). Files
    that were there before the test are left alone."""
    names = ["access-ledger-warehouse.duckdb", "access-ledger-warehouse.duckdb.wal"]
    before = {name for name in names if os.path.exists(name)}
    yield
    for name in names:
        if name not in before and os.path.exists(name):
            os.remove(name)
    if "access-ledger-warehouse.duckdb" not in before and os.path.isdir("access-ledger-warehouse.duckdb.sync"):
        import shutil

        shutil.rmtree("access-ledger-warehouse.duckdb.sync", ignore_errors=True)


# -- one headless Chromium for the session (Debian's, driven by playwright) -----------------------------


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium through playwright, one per test session; skipped outside CI when it is missing."""
    import shutil

    exe = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        if IN_CI:
            raise RuntimeError("CI=true but chromium or playwright is missing")
        pytest.skip("chromium or playwright is not installed (CI installs them)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()
