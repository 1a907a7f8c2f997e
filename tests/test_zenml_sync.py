"""`sync zenml` against a real ZenML 0.98 OSS server started by the tests (once per session), on both backends."""

from __future__ import annotations

import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from zenml_server import ENV, Rest, ZenMLServer, free_port

from access_ledger import api
from access_ledger.cli import app
from ledger.app import AccessLedger
from ledger.timeutil import format_instant, now

runner = CliRunner()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def zenml(tmp_path_factory):
    venv = os.environ.get(ENV)
    if not venv:
        if IN_CI:
            pytest.fail(f"CI=true but ${ENV} (a virtual environment with zenml[server]) is not set")
        pytest.skip(f"${ENV} is not set (a virtual environment with zenml[server]==0.98.0)")
    server = ZenMLServer(venv, tmp_path_factory.mktemp("zenml")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rest(zenml) -> Rest:
    return zenml.admin()


def sync(zenml, url: str, *extra: str, password: str | None = None, username: str = "admin"):
    env = {"ZENML_TEST_PASSWORD": password or zenml.password}
    args = ["--db", url, "sync", "zenml", "--url", zenml.url, "--username", username]
    return runner.invoke(app, [*args, "--password-env", "ZENML_TEST_PASSWORD", *extra], env=env)


def cli(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args])


def unique(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:6]}"


def test_sync_records_what_changed_on_the_server_and_answers_as_of_each_sync(zenml, rest, url_factory):
    alice, bob, ci, old = unique("alice"), unique("bob"), unique("ci"), unique("old")
    aws = unique("aws-prod")
    alice_id = rest.create_user(alice, "pw-alice-12345")
    rest.create_user(bob, "pw-bob-12345", admin=True)
    ci_id = rest.create_service_account(ci)
    key = rest.create_api_key(ci_id, "deploy")
    old_id = rest.create_service_account(old)
    rest.create_api_key(old_id, "legacy")
    aws_id = rest.create_connector(aws, {"env": "prod"})
    url = url_factory()

    first = sync(zenml, url)
    assert first.exit_code == 0, first.output
    assert f"sync zenml {zenml.url} into tenant 'zenml': recorded" in first.output
    t1 = format_instant(now())
    led = AccessLedger.open(url)
    events = [e for _, e in led.read()]
    assert all(e["actor"] == "system" and e["reason"] == f"sync zenml from {zenml.url}" for e in events)
    assert events[0]["type"] == "OrganizationCreated" and events[0]["preset"] == "zenml-oss-098"
    kinds = {(e["type"], e.get("user") or e.get("service_account") or e.get("connector")) for e in events}
    assert {("UserCreated", alice), ("UserCreated", bob), ("ServiceAccountCreated", ci)} <= kinds
    assert {("ApiKeyCreated", ci), ("ConnectorRegistered", aws), ("ConnectorChanged", aws)} <= kinds
    [changed] = [e for e in events if e["type"] == "ConnectorChanged" and e["connector"] == aws]
    assert changed["owner"] == "user:admin" and changed["labels"] == ["env=prod"]
    assert changed["auth_method"] == "password" and changed["resource_types"] == ["docker-registry"]
    assert {"principal": f"user:{bob}", "role": "admin"}.items() <= next(
        e for e in events if e["type"] == "RoleAssigned" and e.get("principal") == f"user:{bob}"
    ).items()
    dump = b"".join(led.export_lines())
    assert b"s3cr3t" not in dump and key.encode() not in dump and zenml.password.encode() not in dump
    head = led.head()
    led.close()

    rest.deactivate_user(alice_id)
    rest.rotate_api_key(ci_id, "deploy")
    rest.delete_connector(aws_id)
    rest.set_service_account_active(old_id, False)
    second = sync(zenml, url)
    assert second.exit_code == 0, second.output
    led = AccessLedger.open(url)
    new = [e for p, e in led.read(head + 1)]
    got = {(e["type"], e.get("user") or e.get("service_account") or e.get("connector")) for e in new}
    assert {("UserDeactivated", alice), ("ApiKeyRotated", ci), ("ConnectorDeleted", aws)} <= got
    assert ("ServiceAccountDeactivated", old) in got
    head = led.head()
    led.close()

    third = sync(zenml, url)
    assert third.exit_code == 0 and "nothing changed, nothing recorded" in third.output, third.output
    led = AccessLedger.open(url)
    assert led.head() == head and led.verify().ok
    led.close()

    secret = ["read_secret_value", f"service_connector/{aws}", "--tenant", "zenml"]
    assert cli(url, "check", f"user:{alice}", *secret, "--at", t1).exit_code == 0
    assert cli(url, "check", f"service_account:{ci}", *secret, "--at", t1).exit_code == 0
    assert cli(url, "check", f"user:{alice}", *secret).exit_code == 1
    assert cli(url, "check", f"user:{bob}", *secret).exit_code == 1  # the connector is gone
    then = json.loads(cli(url, "who-can", *secret[:2], "--tenant", "zenml", "--at", t1, "--format", "json").output)
    assert {f"user:{alice}", f"user:{bob}", f"service_account:{ci}"} <= {r["principal"] for r in then}
    later = json.loads(cli(url, "who-can", *secret[:2], "--tenant", "zenml", "--format", "json").output)
    assert later == []
    admin = ["update", "member/anyone"]
    assert cli(url, "check", f"user:{bob}", *admin).exit_code == 0
    assert cli(url, "check", f"user:{alice}", *admin).exit_code == 1

    hygiene = cli(url, "audit", "hygiene", "--format", "json")
    assert hygiene.exit_code == 0, hygiene.output
    rows = json.loads(hygiene.output)
    assert any(r["finding"] == "api-key-of-deactivated" and r["who"] == f"service_account:{old}" for r in rows)
    late = json.loads(cli(url, "audit", "hygiene", "--format", "json", "--at", "+91d").output)
    unused = {r["who"] for r in late if r["finding"] == "api-key-unused"}
    assert f"service_account:{ci}" in unused


def test_a_deleted_account_leaves_the_team_and_a_second_sync_records_nothing(zenml, rest, url_factory):
    carol = unique("carol")
    carol_id = rest.create_user(carol, "pw-carol-12345", admin=True)
    url = url_factory()
    assert sync(zenml, url).exit_code == 0
    rest.delete_user(carol_id)
    assert sync(zenml, url).exit_code == 0
    led = AccessLedger.open(url)
    mine = [
        e for _, e in led.read() if f"user:{carol}" in (e.get("member"), e.get("principal"), f"user:{e.get('user')}")
    ]
    assert [e["type"] for e in mine[-3:]] == ["RoleUnassigned", "TeamMemberRemoved", "UserDeactivated"]
    # The auditor reads the deletion in the reason of each event it caused, not a deactivation like any other.
    assert {e["reason"] for e in mine[-3:]} == {f"sync zenml from {zenml.url}: deleted on the server"}
    shown = cli(url, "history", f"user:{carol}", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert [r["type"] for r in json.loads(shown.output) if "deleted on the server" in r["reason"]] == [
        "RoleUnassigned",
        "TeamMemberRemoved",
        "UserDeactivated",
    ]
    assert api.check(led, f"user:{carol}", "update", "member/x")["allowed"] is False
    head = led.head()
    led.close()
    again = sync(zenml, url)
    assert again.exit_code == 0 and "nothing changed" in again.output
    led = AccessLedger.open(url)
    assert led.head() == head
    led.close()


def test_a_name_the_ledger_refuses_is_reported_and_the_rest_is_recorded(zenml, rest, url_factory):
    # ZenML takes names of up to 255 characters; the ledger's names stop at 200.
    long_name = unique("c") + "-" + "x" * 200
    fine = unique("fine")
    long_id = rest.create_connector(long_name)
    rest.create_connector(fine)
    url = url_factory()
    try:
        result = sync(zenml, url)
        assert result.exit_code == 0, result.output
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"Warning: sync zenml {zenml.url}: connector {long_name[:60]!r}... not recorded: "
            "name: longer than 200 characters"
        ]
        assert "recorded" in result.stdout and "1 refused" in result.stdout
        led = AccessLedger.open(url)
        connectors = {e.get("connector") for _, e in led.read()}
        assert fine in connectors and long_name not in connectors
        head = led.head()
        led.close()
        again = sync(zenml, url)
        assert again.exit_code == 0 and "nothing changed" in again.stdout, again.output
        assert again.stderr.strip().splitlines() == lines  # said again on every sync: a cron job mails it
        led = AccessLedger.open(url)
        assert led.head() == head
        led.close()
    finally:
        rest.delete_connector(long_id)


class _OtherVersion(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"version": "0.42.0", "name": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def other_version():
    server = HTTPServer(("127.0.0.1", 0), _OtherVersion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_refusals_are_one_line_and_write_nothing(zenml, rest, url_factory, tmp_path, other_version):
    dave = unique("dave")
    rest.create_user(dave, "pw-dave-12345")
    url = url_factory()
    assert sync(zenml, url).exit_code == 0
    led = AccessLedger.open(url)
    head = led.head()
    led.close()
    wrong = sync(zenml, url, password="not-the-password")
    assert wrong.exit_code == 2
    assert (
        wrong.stderr.strip() == f"Error: the ZenML server at {zenml.url} refused the login of 'admin' (wrong password?)"
    )
    plain = sync(zenml, url, password="pw-dave-12345", username=dave)
    assert plain.exit_code == 2
    assert plain.stderr.startswith(f"Error: '{dave}' is not an admin of the ZenML server at {zenml.url}")
    port = free_port()
    gone = runner.invoke(
        app,
        ["--db", url, "sync", "zenml", "--url", f"http://127.0.0.1:{port}", "--password-env", "P"],
        env={"P": "x"},
    )
    assert (
        gone.exit_code == 2
        and gone.stderr.strip() == f"Error: no ZenML server answers at http://127.0.0.1:{port} (ConnectError)"
    )
    odd = runner.invoke(
        app, ["--db", url, "sync", "zenml", "--url", other_version, "--password-env", "P"], env={"P": "x"}
    )
    assert odd.exit_code == 2
    assert odd.stderr.strip() == (
        f"Error: the ZenML server at {other_version} runs version '0.42.0'; this client knows 0.98.x"
    )
    unset = runner.invoke(app, ["--db", url, "sync", "zenml", "--url", zenml.url, "--password-env", "NOPE"], env={})
    assert unset.exit_code == 2 and "NOPE is not set" in unset.stderr
    for result in (wrong, plain, gone, odd, unset):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert zenml.password not in result.output
    led = AccessLedger.open(url)
    assert led.head() == head
    led.close()
    fresh = tmp_path / "never.db"
    assert sync(zenml, str(fresh), password="wrong").exit_code == 2
    assert not fresh.exists()


# Changes made through the REST API, each followed by a sync: the oracle is the server's own answer, read
# back by the test after each sync (admin flag, active accounts, connectors that exist).
CHANGES = st.lists(
    st.tuples(
        st.sampled_from(
            ["user", "admin", "toggle-active", "toggle-admin", "delete-user", "connector", "delete-connector"]
        ),
        st.integers(0, 10),
    ),
    min_size=1,
    max_size=4,
)


def _server_truth(rest: Rest, prefix: str) -> tuple[dict[str, tuple[bool, bool]], set[str]]:
    users = {
        u["name"]: (u["body"]["active"], u["body"]["is_admin"])
        for u in rest.list("/users")
        if u["name"].startswith(prefix)
    }
    connectors = {
        c["name"] for c in rest.list("/service_connectors", expand_secrets="false") if c["name"].startswith(prefix)
    }
    return users, connectors


def _full_read_plans_nothing(led: AccessLedger, client) -> bool:
    """A full read of the server now would record nothing: the passes before it missed nothing."""
    from access_ledger.zenml.sync import LedgerView, plan, read_server

    view = LedgerView("zenml")
    view.catch_up(led)
    server, snapshot = read_server(client, None)
    assert snapshot.full
    return plan(view, server, "x", format_instant(now()), "zenml") == []


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=CHANGES)
def test_check_at_each_sync_agrees_with_what_the_server_enforced(zenml, rest, url_factory, changes):
    # One syncer for the whole sequence, as `--interval` runs: after its first pass it asks each list only for
    # what changed (and its total), unless something was deleted; a full read after each pass finds nothing more.
    from access_ledger.zenml.client import ZenMLClient
    from access_ledger.zenml.sync import Syncer

    prefix = unique("p") + "-"
    url = url_factory(prefix)
    led = AccessLedger.open(url, create=True)
    client = ZenMLClient(zenml.url)
    client.login("admin", zenml.password)
    asked: list[str] = []
    client._http.event_hooks["request"].append(lambda request: asked.append(str(request.url)))
    syncer = Syncer(led, client, "zenml")
    users: dict[str, str] = {}
    connectors: dict[str, str] = {}
    snapshots = []
    try:
        for n, (change, pick) in enumerate(changes):
            deleted = n == 0  # the first pass reads everything
            if change in ("user", "admin") or not users:
                name = f"{prefix}u{n}"
                users[name] = rest.create_user(name, "pw-12345678", admin=change == "admin")
            elif change == "toggle-active":
                name = sorted(users)[pick % len(users)]
                truth, _ = _server_truth(rest, prefix)
                (rest.activate_user if not truth[name][0] else rest.deactivate_user)(users[name])
            elif change == "toggle-admin":
                name = sorted(users)[pick % len(users)]
                truth, _ = _server_truth(rest, prefix)
                rest.set_admin(users[name], not truth[name][1])
            elif change == "delete-user":
                name = sorted(users)[pick % len(users)]
                rest.delete_user(users.pop(name))
                deleted = True
            if change == "connector" or not connectors:
                cname = f"{prefix}c{n}"
                connectors[cname] = rest.create_connector(cname)
            elif change == "delete-connector":
                cname = sorted(connectors)[pick % len(connectors)]
                rest.delete_connector(connectors.pop(cname))
                deleted = True
            del asked[:]
            assert syncer.once().full_read == deleted, (n, change)
            if not deleted:
                lists = [a for a in asked if "/api_keys" not in a]
                assert lists and all("size=1&" in a + "&" or "updated=gte" in a for a in lists), lists
            snapshots.append((format_instant(now()), *_server_truth(rest, prefix)))
            assert _full_read_plans_nothing(led, client), (n, change)
        everyone = {name for _, accounts, _ in snapshots for name in accounts}
        every_connector = {c for _, _, cs in snapshots for c in cs}
        for instant, accounts, live in snapshots:
            for name in everyone:
                active, is_admin = accounts.get(name, (False, False))
                ref = f"user:{name}"
                got = api.check(led, ref, "update", "member/x", at=instant)["allowed"]
                assert got == (active and is_admin), (instant, name)
                for c in every_connector:
                    read = api.check(led, ref, "read_secret_value", f"service_connector/{c}", "zenml", at=instant)
                    assert read["allowed"] == (active and c in live), (instant, name, c)
    finally:
        client.close()
        led.close()


def test_serve_sync_zenml_records_the_server_while_serving(zenml, rest, url_factory, tmp_path):
    import shutil
    import signal
    import subprocess
    import time

    import httpx

    url = url_factory()
    assert sync(zenml, url).exit_code == 0  # the service serves an existing ledger
    erin = unique("erin")
    port = free_port()
    env = {**os.environ, "ZENML_TEST_PASSWORD": zenml.password}
    args = ["--db", url, "serve", "--port", str(port), "--sync-zenml", zenml.url]
    args += ["--zenml-password-env", "ZENML_TEST_PASSWORD", "--zenml-interval", "1s"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([shutil.which("access-ledger"), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rest.create_user(erin, "pw-erin-12345")
        seen = False
        while not seen and time.monotonic() < deadline:
            time.sleep(0.5)
            led = AccessLedger.open(url)
            seen = any(e.get("user") == erin for _, e in led.read())
            led.close()
        assert seen, (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert f"sync zenml {zenml.url} into tenant zenml" in text and zenml.password not in text


def test_serve_sync_zenml_refuses_a_wrong_password_before_serving(zenml, url_factory):
    url = url_factory()
    assert sync(zenml, url).exit_code == 0
    result = runner.invoke(
        app,
        ["--db", url, "serve", "--sync-zenml", zenml.url, "--zenml-password-env", "P", "--port", str(free_port())],
        env={"P": "wrong"},
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"Error: the ZenML server at {zenml.url} refused the login of 'admin' (wrong password?)"
    )
