"""The service under load on PostgreSQL: 4 worker processes x 8 clients, a worker killed mid-batch, the
database restarted under load. One private PostgreSQL for the module (never the shared server: it is
restarted here), on a free port, from the binaries in /usr/lib/postgresql/*/bin as .ci/pg.sh starts one."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from test_server import Running, free_port, start, stop

from access_ledger import api
from ledger.app import AccessLedger
from ledger.timeutil import format_instant, now

pytestmark = pytest.mark.slow
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_BIN = next(iter(sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/initdb"))), None)
if PG_BIN is None and not IN_CI:
    pytest.skip("no PostgreSQL binaries in /usr/lib/postgresql/*/bin", allow_module_level=True)


@dataclass
class PrivatePG:
    data: str
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", f"{self.data}/server.log", "-w", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePG]:
    assert PG_BIN is not None, "CI=true but no PostgreSQL binaries in /usr/lib/postgresql/*/bin"
    data = tempfile.mkdtemp(prefix="access-ledger-pg-")  # not under pytest's root-only folder: postgres reads it
    run_as: list[str] = []
    if os.getuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:  # initdb refuses to run as root: a system user for it, as .ci/pg.sh makes
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = PrivatePG(data, free_port(), run_as)
    options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {data} -c fsync=off -c max_connections=100"
    server.ctl("-o", options, "start")
    server.options = options  # type: ignore[attr-defined]
    yield server
    try:
        server.ctl("-m", "immediate", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def service(pg, tmp_path_factory) -> Iterator[Running]:
    """`serve --workers 4` on the private PostgreSQL, with a `report` token."""
    folder = tmp_path_factory.mktemp("reliability")
    with AccessLedger.open(pg.url, create=True) as led:
        led.init(org="acme")
        led.create_tenant("prod")
        led.create_user("alice")
        led.create_service_account("platform")
        token = api.create_token(led, "service_account:platform", ["report", "read"], actor="system")["token"]
    running = start(pg.url, folder / "server.log", {"report": token}, "--workers", "4")
    yield running
    stop(running)


def _event(tag: str, n: int | str) -> dict:
    return {
        "type": "ResourceAccessed",
        "at": format_instant(now()),
        "actor": "service_account:platform",
        "principal": "user:alice",
        "tenant": "prod",
        "resource": f"model/{tag}",
        "action": "read",
        "outcome": "allowed",
        "id": f"{tag}-{n}",
    }


@dataclass
class Client:
    """Posts bodies one after the other, each until it is accepted (retrying the same body: idempotent by id)."""

    running: Running
    seen: Counter = field(default_factory=Counter)  # status (or transport error) -> how often
    bodies_503: list[str] = field(default_factory=list)
    failure: str | None = None

    def post(self, make: Callable[[], bytes], deadline: float) -> dict:
        """POST make()'s body until accepted: the same bytes again after a 503 or a dropped connection (it may
        have been written), a fresh body (new `at`) after an out-of-order refusal (nothing was written)."""
        body = make()
        while True:
            try:
                got = httpx.post(
                    self.running.base + "/v1/events",
                    content=body,
                    headers={"Authorization": f"Bearer {self.running.tokens['report']}"},
                    timeout=60,
                )
                self.seen[got.status_code] += 1
                if got.status_code == 200:
                    return got.json()
                if got.status_code == 400 and "append-only in time" in got.text:
                    # Another client wrote a later event first: the ledger is append-only in time.
                    body = make()
                    continue
                if got.status_code != 503:
                    raise AssertionError(f"{got.status_code}: {got.text}")
                self.bodies_503.append(got.text)
            except httpx.TransportError as exc:
                self.seen[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"not accepted before the deadline; seen {dict(self.seen)}")
            time.sleep(0.2)

    def run(self, bodies: list[Callable[[], bytes]], deadline: float) -> None:
        try:
            for make in bodies:
                self.post(make, deadline)
        except Exception as exc:  # noqa: BLE001 - reported by the test in its thread
            self.failure = repr(exc)


def _load(running: Running, tag: str, clients: int, per_client: int, singles: int, batch: int) -> list[Client]:
    """`clients` threads, each posting `singles` single events, then the rest of its share in batches."""
    threads, made = [], []
    deadline = time.monotonic() + 150
    for c in range(clients):
        ids = [f"{c}-{n}" for n in range(per_client)]
        bodies = [lambda i=i: orjson.dumps(_event(tag, i)) for i in ids[:singles]]
        rest = ids[singles:]
        bodies += [
            lambda part=rest[k : k + batch]: orjson.dumps([_event(tag, i) for i in part])
            for k in range(0, len(rest), batch)
        ]
        client = Client(running)
        made.append(client)
        threads.append(threading.Thread(target=client.run, args=(bodies, deadline)))
    for t in threads:
        t.start()
    return made, threads  # type: ignore[return-value]


def _ids_and_positions(url: str, prefix: str) -> tuple[Counter, list[int]]:
    """How often each event id with this prefix is in the log, and every position of the log, in order."""
    ids: Counter = Counter()
    positions: list[int] = []
    with AccessLedger.open(url) as led:
        after = 0
        while True:
            page = api.read_events(led, after, api.EVENTS_LIMIT)
            if not page["events"]:
                break
            for e in page["events"]:
                positions.append(e["position"])
                if str(e["event"].get("id", "")).startswith(prefix):
                    ids[e["event"]["id"]] += 1
            after = positions[-1]
        assert led.verify().ok
    return ids, positions


def _assert_exact(url: str, tag: str, expected: int) -> None:
    ids, positions = _ids_and_positions(url, tag + "-")
    assert len(ids) == expected, f"{expected - len(ids)} events lost"
    assert max(ids.values()) == 1, "an event was recorded twice"
    assert positions == list(range(1, len(positions) + 1)), "the positions are not dense"


def test_four_workers_eight_clients_twenty_thousand_events_none_lost_or_doubled(service):
    clients, threads = _load(service, "load", clients=8, per_client=2500, singles=20, batch=1240)
    for t in threads:
        t.join(200)
    assert [c.failure for c in clients] == [None] * 8
    _assert_exact(service.url, "load", 20_000)


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    # uvicorn's supervisor also starts a resource tracker with multiprocessing: only its server processes.
    return [int(p) for p in children if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def _wait_ready(running: Running, workers: int = 4) -> None:
    deadline = time.monotonic() + 60
    while len(_workers(running.process.pid)) < workers or not _healthy(running):
        assert time.monotonic() < deadline, "the workers were not restarted"
        time.sleep(0.2)


def _healthy(running: Running) -> bool:
    try:
        return httpx.get(running.base + "/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _settled(url: str) -> None:
    """Wait until no other session holds a lock on a table: a killed worker's backend may still be finishing
    the COMMIT its client sent before it died (the batch then lands whole), or rolling the batch back."""
    import psycopg

    deadline = time.monotonic() + 30
    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE relation IS NOT NULL AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if not busy:
                return
            time.sleep(0.05)
    raise AssertionError("a killed worker's session still holds a table after 30 s")


def _writing(url: str, timeout: float) -> bool:
    """Wait (up to `timeout` s) until another session is inside a transaction that has written or locked a row
    (it holds a transaction id: a read-only one never does); whether one was seen."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            ).fetchone()[0]:
                return True
            time.sleep(0.002)
    return False


def test_a_worker_killed_mid_batch_leaves_the_batch_all_or_nothing(service):
    hits = 0
    # The kill lands while the batch's transaction is open (seen in pg_stat_activity), then some time after it
    # began: a fixed delay alone may come after a fast worker has answered.
    for attempt, delay in enumerate((0.0, 0.01, 0.03, 0.0, 0.02)):
        tag = f"kill{attempt}"
        body = orjson.dumps([_event(tag, n) for n in range(2000)])
        outcome: list = []

        def post(body=body, outcome=outcome) -> None:
            try:
                outcome.append(
                    httpx.post(
                        service.base + "/v1/events",
                        content=body,
                        headers={"Authorization": f"Bearer {service.tokens['report']}"},
                        timeout=60,
                    ).status_code
                )
            except httpx.TransportError as exc:
                outcome.append(type(exc).__name__)

        poster = threading.Thread(target=post)
        poster.start()
        _writing(service.url, 10)
        time.sleep(delay)
        for pid in _workers(service.process.pid):  # the one handling the batch among them
            os.kill(pid, signal.SIGKILL)
        poster.join(60)
        _settled(service.url)
        ids, _ = _ids_and_positions(service.url, tag + "-")
        assert len(ids) in (0, 2000), f"a killed batch left {len(ids)} of its 2000 events"
        if outcome != [200]:
            hits += 1
        _wait_ready(service)
        # The client retries the same batch: it is recorded once, whatever the kill left.
        retried = Client(service).post(lambda body=body: body, time.monotonic() + 60)
        assert retried["written"] + retried["skipped"] == 2000
        assert retried["skipped"] == len(ids)
        _assert_exact(service.url, tag, 2000)
        if hits:
            break
    assert hits >= 1, "no kill landed while a batch was in flight"


def test_postgresql_restarted_under_load_gives_503_then_success_and_loses_nothing(service, pg):
    clients, threads = _load(service, "restart", clients=4, per_client=600, singles=20, batch=145)
    # Restart once the load is under way (a few writes accepted), not after a fixed time: a fast service
    # may have finished all 96 requests before then, and a restart between requests is no test of it.
    deadline = time.monotonic() + 60
    while sum(c.seen[200] for c in clients) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    pg.ctl("-m", "fast", "restart", "-o", pg.options)
    for t in threads:
        t.join(200)
    assert [c.failure for c in clients] == [None] * 4
    seen = sum((c.seen for c in clients), Counter())
    assert seen[503] >= 1, f"no client saw the restart: {dict(seen)}"
    for text in (b for c in clients for b in c.bodies_503):
        assert "\n" not in text and "Traceback" not in text
    assert b"Traceback" not in service.log.read_bytes()
    _assert_exact(service.url, "restart", 2400)
