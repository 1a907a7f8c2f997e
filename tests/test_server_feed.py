"""The change feed (GET /v1/events/stream) and POST /v1/evidence through a real uvicorn, started once per
session on each backend with a signing key of its own; and the feed's chain check on a tampered log."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app as cli_app
from access_ledger.server.routers.stream import POLL, EventStream, linked_batch
from ledger.app import AccessLedger
from ledger.errors import IntegrityFailure
from ledger.timeutil import format_instant, now
from tests.asgi import run_async
from tests.conftest import BACKENDS, _drop_schema, make_url
from tests.test_server import AT, Running, build, start, stop

runner = CliRunner()
EXE = str(Path(sys.executable).parent / "access-ledger")
CHECKER = Path(__file__).resolve().parent.parent / "reports" / "check_bundle.py"


@dataclass
class Feed(Running):
    keys: Path = Path()
    env: dict[str, str] = field(default_factory=dict)  # what the service's side holds: the signing key
    tmp: Path = Path()  # the service's temporary folder


@pytest.fixture(scope="session", params=BACKENDS)
def feed(request, tmp_path_factory) -> Iterator[Feed]:
    """A service per backend whose ledger (and whose evidence) is signed with a key only the service holds."""
    folder = tmp_path_factory.mktemp(f"feed-{request.param}")
    url, schema = make_url(request.param, folder)
    keys = folder / "keys"
    assert runner.invoke(cli_app, ["keys", "create", "--out", str(keys)]).exit_code == 0
    env = {"ACCESS_LEDGER_SIGNING_KEY": str(keys / "signing.key")}
    tmp = folder / "tmp"
    tmp.mkdir()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in {**env, "TMPDIR": str(tmp)}.items():
                mp.setenv(name, value)
            tokens = build(url)
            running = start(url, folder / "server.log", tokens)
        yield Feed(**vars(running), keys=keys, env=env, tmp=tmp)
        stop(running)
    finally:
        if schema:
            _drop_schema(schema)


def cli(feed: Feed, *args: str, stdin: str | None = None):
    return runner.invoke(
        cli_app, ["--db", feed.url, *args], input=stdin, env={**feed.env, "ACCESS_LEDGER_ACTOR": "system"}
    )


def ledger_cli(feed: Feed, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (another writer of the same ledger)."""
    return subprocess.run(
        [EXE, "--db", feed.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **feed.env, "ACCESS_LEDGER_ACTOR": "system"},
    )


# -- reading a stream --------------------------------------------------------------------------


class Stream:
    """An open SSE response, read event by event: (id, event, data) or ("comment", text)."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict:
        got: dict = {}
        for line in self.lines:
            if line == "":
                if got:
                    return got
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                return {"comment": value}
            got[name] = value
        raise EOFError(f"the stream ended ({got})")

    def events(self, n: int) -> list[dict]:
        """The next n ledger events (heartbeats and the retry line passed over)."""
        out = []
        while len(out) < n:
            got = self.next()
            if "comment" in got or "retry" in got:
                continue
            assert got["event"] == "ledger-event", got
            data = json.loads(got["data"])
            assert int(got["id"]) == data["position"]
            out.append(data)
        return out


@contextmanager
def streaming(feed: Feed, token: str = "read", timeout: float = 30, **kw) -> Iterator[Stream]:
    headers = {"Authorization": f"Bearer {feed.tokens.get(token, token)}", **kw.pop("headers", {})}
    with httpx.stream("GET", feed.base + "/v1/events/stream", headers=headers, timeout=timeout, **kw) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def logged(feed: Feed) -> list[tuple[int, str, dict]]:
    """(position, link, event) of every event in the ledger, read directly."""
    with AccessLedger.open(feed.url) as led:
        head = led.head()
        return [
            (p, api.link_at(led, p), json.loads(line))
            for p, line in zip(range(1, head + 1), led.export_lines(), strict=True)
        ]


def access(n: str) -> dict:
    return {
        "type": "ResourceAccessed",
        "at": format_instant(now()),
        "actor": "service_account:platform",
        "id": f"feed-{n}",
        "principal": "user:alice",
        "tenant": "prod",
        "resource": "model/fraud",
        "action": "read",
        "outcome": "allowed",
    }


# -- the feed ----------------------------------------------------------------------------------


def test_the_stream_delivers_every_event_in_order_with_its_link(feed):
    known = logged(feed)
    with streaming(feed, "audit") as stream:
        got = stream.events(len(known))
    assert [(e["position"], e["link"], e["event"]) for e in got] == known


@pytest.mark.parametrize("cursor", [0, 1, 7])
def test_last_event_id_resumes_after_it_without_gap_or_duplicate(feed, cursor):
    known = logged(feed)
    with streaming(feed, params={"after": cursor}) as stream:
        first = stream.events(3)
    assert [e["position"] for e in first] == [cursor + 1, cursor + 2, cursor + 3]
    # A reconnecting EventSource sends the original URL and the last id it saw: the id wins.
    with streaming(feed, params={"after": cursor}, headers={"Last-Event-ID": str(first[-1]["position"])}) as stream:
        rest = stream.events(len(known) - cursor - 3)
    assert [(e["position"], e["link"], e["event"]) for e in first + rest] == known[cursor:]


def test_the_stream_sees_events_another_process_imports(feed, tmp_path):
    head = logged(feed)[-1][0]
    with streaming(feed, params={"after": head}) as stream:
        lines = tmp_path / "more.jsonl"
        lines.write_text("".join(json.dumps(access(f"{head}-{i}")) + "\n" for i in range(3)))
        done = ledger_cli(feed, "import", str(lines))
        assert done.returncode == 0, done.stderr
        got = stream.events(3)
    assert [e["event"]["id"] for e in got] == [f"feed-{head}-{i}" for i in range(3)]
    assert [e["position"] for e in got] == [head + 1, head + 2, head + 3]
    assert [(e["position"], e["link"], e["event"]) for e in got] == logged(feed)[head:]


def test_an_idle_stream_sends_heartbeats(feed):
    head = logged(feed)[-1][0]
    started = time.monotonic()
    with streaming(feed, params={"after": head, "heartbeat": 1}) as stream:
        got = stream.next()
        while "retry" in got:
            got = stream.next()
    assert got == {"comment": "heartbeat"}
    assert time.monotonic() - started < 10


def test_the_stream_refuses_a_missing_token_a_token_without_the_scope_and_a_bad_cursor(feed):
    url = feed.base + "/v1/events/stream"
    assert httpx.get(url, timeout=10).status_code == 401
    for name, status in (("report", 403), ("admin", 403), ("revoked", 401), ("expired", 401), ("inactive", 401)):
        got = feed.get("/v1/events/stream", name)
        assert got.status_code == status, (name, got.text)
        assert "error" in got.json()
    bad = feed.get("/v1/events/stream", headers={"Last-Event-ID": "7; drop"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("Last-Event-ID: must be a ledger position")
    beyond = feed.get("/v1/events/stream", params={"after": 10**9})
    assert beyond.status_code == 400 and "beyond the ledger's head" in beyond.json()["detail"]
    assert feed.get("/v1/events/stream", params={"after": -1}).status_code == 422
    described = feed.get("/openapi.json", "audit").json()["paths"]
    assert "text/event-stream" in described["/v1/events/stream"]["get"]["responses"]["200"]["content"]
    assert "application/zip" in described["/v1/evidence"]["post"]["responses"]["200"]["content"]


def test_revoking_the_token_ends_an_open_stream(feed):
    made = cli(feed, "token", "create", "--for", "service_account:auditor", "--scope", "read")
    assert made.exit_code == 0, made.output
    token = next(word for word in made.output.split() if word.startswith("tok_") and "." in word)
    with streaming(feed, token) as stream:
        stream.events(2)
        done = ledger_cli(feed, "token", "revoke", token.split(".")[0])
        assert done.returncode == 0, done.stderr
        revoked = time.monotonic()
        last = None
        while True:
            try:
                got = stream.next()
            except EOFError:
                break
            if got.get("event") == "end":
                last = json.loads(got["data"])
    assert last is not None and last["error"] == "revoked"
    assert time.monotonic() - revoked < 5  # bound: one poll of the head (0.5 s) and what was left to send


def test_a_client_that_takes_nothing_is_dropped():
    """A stalled reader holds one batch, not the connection forever: a send that never completes ends the
    response after the send timeout."""
    sent: list[dict] = []
    produced = 0

    async def frames():
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield b"data: x\n\n"

    async def stalled(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await anyio.sleep_forever()

    async def run() -> float:
        started = time.monotonic()
        await EventStream(frames(), send_timeout=0.3).stream_response(stalled)
        return time.monotonic() - started

    took = run_async(run)
    assert 0.3 <= took < 3
    assert produced == 1 and [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_the_feed_refuses_to_send_events_whose_chain_was_edited(ledger_url):
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(org="acme", at="2026-01-01T00:00:00Z")
        for user in ("alice", "bob", "carol"):
            led.create_user(user, at="2026-01-01T00:00:00Z")
        frames, last, link = linked_batch(led, 0, None)
        assert last == led.head() and len(frames) == last and link == led.store.head()[2]
        store = led.store
        with store.transaction(write=True) as c:
            c.execute("UPDATE al_chain SET link = ? WHERE position = 2", ("f" * 64,))
        with pytest.raises(IntegrityFailure, match="position 3 does not match its hash chain link"):
            linked_batch(led, 2, None)  # the link the cursor starts from was edited
        with pytest.raises(IntegrityFailure, match="position 2 does not match its hash chain link"):
            linked_batch(led, 0, None)


# -- evidence ----------------------------------------------------------------------------------


PERIOD = {"from": "2026-01-01T00:00:00Z", "to": AT}


def test_evidence_is_the_clis_bundle_signed_by_the_service_and_verifies(feed, tmp_path):
    got = feed.post("/v1/evidence", "audit", json=PERIOD)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    served = tmp_path / "served.zip"
    served.write_bytes(got.content)
    public = str(feed.keys / "signing.pub")
    checked = cli(feed, "evidence", "verify", str(served), "--public-key", public)
    assert checked.exit_code == 0, checked.output
    isolated = subprocess.run(
        [sys.executable, "-I", str(CHECKER), str(served), "--public-key", public], capture_output=True, text=True
    )
    assert isolated.returncode == 0, isolated.stdout + isolated.stderr
    made = cli(
        feed,
        "evidence",
        "export",
        "--from",
        PERIOD["from"],
        "--to",
        PERIOD["to"],
        "--zip",
        "--out",
        str(tmp_path / "cli.zip"),
    )
    assert made.exit_code == 0, made.output
    with zipfile.ZipFile(served) as a, zipfile.ZipFile(tmp_path / "cli.zip") as b:
        names = a.namelist()
        assert names == b.namelist()
        audits = [n for n in names if n.startswith("audits/")]
        assert audits and all(a.read(n) == b.read(n) for n in audits)
        for n in ("events/events.jsonl", "events/chain.jsonl", "check_bundle.py"):
            assert a.read(n) == b.read(n), n
        manifest = json.loads(a.read("manifest.json"))
    assert manifest["signature_ed25519"]["algorithm"] == "Ed25519"  # by the key only the service holds
    assert manifest["command"].startswith("POST /v1/evidence from=2026-01-01T00:00:00Z to=2026-03-01T00:00:00Z")
    token_id, secret = feed.tokens["audit"].split(".", 1)
    assert f"token={token_id}" in manifest["command"] and secret.encode() not in served.read_bytes()
    assert got.headers["x-manifest-sha256"] == hashlib.sha256(a_manifest(served)).hexdigest()
    assert not any(feed.tmp.iterdir())  # the temporary bundle is gone once sent


def a_manifest(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read("manifest.json")


def test_evidence_needs_the_audit_scope_and_refuses_bad_periods_writing_nothing(feed):
    assert httpx.post(feed.base + "/v1/evidence", timeout=10).status_code == 401
    assert feed.post("/v1/evidence", "read", json=PERIOD).status_code == 403
    for body, words in (
        ({"period": "2026-Q5"}, "period: '2026-Q5' is not a period"),
        ({"period": "2026", "from": "2026-01-01"}, "period: give period or from/to, not both"),
        ({"from": "yesterday-ish"}, "from:"),
        ({"from": AT, "to": "2026-01-01T00:00:00Z"}, "is after to"),
        ({"window": "soon"}, "window"),
        ({"period": 2026}, None),
        ({"signing_key": "/etc/passwd"}, None),
    ):
        got = feed.post("/v1/evidence", "audit", json=body)
        assert got.status_code in (400, 422), (body, got.text)
        if words:
            assert words in got.json()["detail"], (body, got.text)
        assert "Traceback" not in got.text
    assert not any(feed.tmp.iterdir())


def test_sigterm_stops_the_service_with_a_stream_open(feed, tmp_path):
    """An open feed never ends by itself: SIGTERM still stops the service (in-flight requests get the grace
    period, then connections are closed), and the follower resumes elsewhere with Last-Event-ID."""
    import threading

    running = start(feed.url, tmp_path / "server.log", feed.tokens, "--shutdown-timeout", "5")
    seen: list[str] = []

    def follower() -> None:
        headers = {"Authorization": f"Bearer {feed.tokens['read']}"}
        try:
            with httpx.stream("GET", running.base + "/v1/events/stream", headers=headers, timeout=60) as response:
                seen.extend(response.iter_lines())
        except httpx.HTTPError:
            pass

    reader = threading.Thread(target=follower, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any(line.startswith("id: ") for line in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(POLL * 4)  # the stream has sent what there was and is waiting for more
        stopped = time.monotonic()
        running.process.terminate()
        running.process.wait(30)
        assert time.monotonic() - stopped < 20
    finally:
        stop(running)
        reader.join(10)
