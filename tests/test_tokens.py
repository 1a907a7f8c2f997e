"""Service tokens in the chain: TokenIssued / TokenRevoked validated like every event, the token
commands, the follower that the service authenticates against, and the secret never stored."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app
from ledger import errors as E
from ledger.app import AccessLedger
from projections.tokens import TokenFollower, TokenRefused, authenticate, require_scope

runner = CliRunner()
AT = "2026-01-01T00:00:00Z"
SHA = "a" * 64


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


@pytest.fixture
def tled(led):
    led.create_service_account("ci", at="2026-01-01T00:00:01Z")
    led.create_user("alice", at="2026-01-01T00:00:01Z")
    led.create_team("ops", at="2026-01-01T00:00:01Z")
    return led


def issued(token_id: str = "t1", principal: str = "service_account:ci", scopes=("read",), **extra) -> dict:
    return {
        "type": "TokenIssued",
        "at": "2026-01-02T00:00:00Z",
        "actor": "system",
        "token_id": token_id,
        "principal": principal,
        "scopes": list(scopes),
        "secret_sha256": SHA,
        **extra,
    }


def test_create_token_records_only_the_secrets_sha256(tled):
    got = api.create_token(tled, "service_account:ci", ["read", "report"], actor="system", reason="CI-1")
    token_id, secret = got["token"].split(".", 1)
    assert token_id == got["token_id"]
    [(pos, event)] = [(p, e) for p, e in tled.read() if e["type"] == "TokenIssued"]
    assert pos == got["position"]
    assert event["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert event["scopes"] == ["read", "report"] and event["reason"] == "CI-1"
    exported = b"".join(tled.export_lines())
    assert secret.encode() not in exported and got["token"].encode() not in exported
    assert tled.verify().ok


@pytest.mark.parametrize(
    "event, message",
    [
        (issued(principal="service_account:nobody"), "unknown service account 'nobody'"),
        (issued(principal="team:ops"), "principal: 'team:ops' must be a user or a service account"),
        (issued(scopes=("read", "read")), "scopes: a scope is listed twice"),
        (issued(expires_at="2026-01-01T12:00:00Z"), "expires_at: 2026-01-01T12:00:00Z is not after the issue time"),
        (
            issued(scopes=("root",)),
            "scopes.0: Input should be 'report', 'change', 'read', 'audit', 'review' or 'admin'",
        ),
        (issued(scopes=()), "scopes: List should have at least 1 item"),
        (issued(token_id="a.b"), "token_id: 'a.b' is not a token id"),
        (issued(secret="hunter2"), "secret: unknown field (the ledger stores only the documented fields"),
        (
            {"type": "TokenRevoked", "at": "2026-01-02T00:00:00Z", "actor": "system", "token_id": "t9"},
            "token_id: unknown token 't9'",
        ),
    ],
)
def test_token_events_are_refused_and_nothing_is_written(tled, event, message):
    head = tled.head()
    with pytest.raises(E.LedgerError) as exc:
        tled.append(event)
    assert message in str(exc.value)
    assert tled.head() == head


def test_token_of_a_deactivated_principal_reused_id_and_second_revoke_are_refused(tled):
    tled.deactivate_user("alice", at="2026-01-01T00:00:02Z")
    with pytest.raises(E.InactivePrincipal, match="principal: user:alice is deactivated"):
        tled.append(issued(principal="user:alice"))
    tled.append(issued())
    revoke = {"type": "TokenRevoked", "at": "2026-01-02T00:00:00Z", "actor": "system", "token_id": "t1"}
    tled.append(revoke)
    head = tled.head()
    with pytest.raises(E.ValidationError, match="token_id: token 't1' is already revoked"):
        tled.append(revoke)
    with pytest.raises(E.DuplicateEntity, match="token 't1' already exists; a token id is never reused"):
        tled.append(issued())
    assert tled.head() == head


def test_import_names_the_line_of_a_bad_token_event(tled):
    lines = [json.dumps(issued()), json.dumps(issued("t2", scopes=("read", "sudo")))]
    head = tled.head()
    with pytest.raises(E.ValidationError, match=r"^line 2: scopes.1: Input should be"):
        tled.import_lines(lines)
    assert tled.head() == head


def test_export_import_round_trip_keeps_tokens(tled, url_factory):
    api.create_token(tled, "service_account:ci", ["read"], "2027-01-01T00:00:00Z", actor="system")
    second = api.create_token(tled, "user:alice", ["audit", "admin"], actor="system")
    api.revoke_token(tled, second["token_id"], actor="system", reason="left")
    lines = list(tled.export_lines())
    with AccessLedger.open(url_factory("copy"), create=True) as copy:
        copy.import_lines(lines)
        assert list(copy.export_lines()) == lines
        assert copy.verify().ok
        assert api.list_tokens(copy)["rows"] == api.list_tokens(tled)["rows"]
        assert copy.entities("token") == tled.entities("token")


def test_warehouse_sync_accepts_token_events(tled):
    from reports.warehouse import Warehouse

    got = api.create_token(tled, "service_account:ci", ["read"], actor="system")
    api.revoke_token(tled, got["token_id"], actor="system")
    with Warehouse.open(tled, ":memory:") as wh:
        wh.sync()
        rows = wh.con.execute(
            "SELECT type, principal FROM events WHERE type LIKE 'Token%' ORDER BY position"
        ).fetchall()
    assert rows == [("TokenIssued", "service_account:ci"), ("TokenRevoked", None)]


def test_follower_authenticates_and_says_why_it_refuses(tled):
    good = api.create_token(tled, "service_account:ci", ["read"], actor="system")["token"]
    short = api.create_token(tled, "user:alice", ["report"], "2099-06-01T00:00:00Z", actor="system")["token"]
    gone = api.create_token(tled, "service_account:ci", ["read"], actor="system")
    api.revoke_token(tled, gone["token_id"], actor="system")
    follower = TokenFollower(tled.store)
    state = follower.catch_up()
    now = "2099-03-01T00:00:00Z"
    token = authenticate(state, good, now)
    assert token.principal == "service_account:ci"
    require_scope(token, ("read",))

    def refused(presented, instant=now):
        with pytest.raises(TokenRefused) as exc:
            authenticate(state, presented, instant)
        return exc.value.status, exc.value.reason

    assert refused(None) == (401, "missing")
    assert refused("nonsense") == (401, "unknown")
    assert refused(good[:-1] + ("A" if good[-1] != "A" else "B")) == (401, "unknown")
    assert refused(gone["token"]) == (401, "revoked")
    assert refused(short, "2099-06-01T00:00:00Z") == (401, "expired")
    with pytest.raises(TokenRefused) as exc:
        require_scope(authenticate(state, short, now), ("read",))
    assert (exc.value.status, exc.value.reason) == (403, "scope")
    tled.deactivate_user("alice")
    state = follower.catch_up()
    assert refused(short) == (401, "inactive")


def test_follower_refuses_an_edited_token_event(tled, backend):
    got = api.create_token(tled, "service_account:ci", ["read"], actor="system")
    follower = TokenFollower(tled.store)
    follower.catch_up()
    api.create_token(tled, "service_account:ci", ["read"], actor="system")
    # Widen the second token's scopes in the stored bytes: its chain link no longer holds.
    position = tled.head()
    with tled.store.transaction(write=True) as c:
        c.execute(f"SELECT state FROM {tled.store.table} WHERE {tled.store.pos_col} = ?", (position,))
        state = bytes(c.fetchone()[0])
        edited = state.replace(b'"scopes":["read"]', b'"scopes":["admin","read"]')
        assert edited != state
        c.execute(f"UPDATE {tled.store.table} SET state = ? WHERE {tled.store.pos_col} = ?", (edited, position))
    with pytest.raises(E.IntegrityFailure):
        follower.catch_up()
    with pytest.raises(E.IntegrityFailure):
        TokenFollower(tled.store).catch_up()
    assert got["token_id"] in follower.state.tokens  # what was folded before stays as it was


def test_token_cli_prints_the_token_once_and_never_stores_it(ledger_url, backend, tmp_path):
    assert run(ledger_url, "init").exit_code == 0
    assert run(ledger_url, "service-account", "create", "ci").exit_code == 0
    created = run(
        ledger_url,
        "token",
        "create",
        "--for",
        "service_account:ci",
        "--scope",
        "read",
        "--scope",
        "report",
        "--expires-at",
        "+30d",
        "--reason",
        "CI-7",
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    token_id, secret = token.split(".", 1)
    assert f"token {token_id} for service_account:ci recorded at position 3" in created.stderr
    listed = run(ledger_url, "token", "list", "-f", "json")
    assert listed.exit_code == 0
    [row] = json.loads(listed.stdout)
    assert (row["token_id"], row["scopes"], row["status"], row["reason"]) == (
        token_id,
        ["read", "report"],
        "active",
        "CI-7",
    )
    assert secret not in listed.stdout
    assert run(ledger_url, "token", "revoke", token_id).exit_code == 0
    assert json.loads(run(ledger_url, "token", "list", "-f", "json").stdout)[0]["status"] == "revoked"
    again = run(ledger_url, "token", "revoke", token_id)
    assert again.exit_code == 2 and f"Error: token_id: token '{token_id}' is already revoked" in again.stderr
    bad = run(ledger_url, "token", "create", "--for", "service_account:ci", "--scope", "root")
    assert bad.exit_code == 2 and "--scope" in bad.stderr
    csv = run(ledger_url, "token", "list", "-f", "csv")
    assert csv.stdout.splitlines()[0].startswith("token_id,principal,scopes,status")
    exported = run(ledger_url, "export")
    assert token_id in exported.stdout and secret not in exported.stdout
    if backend == "sqlite":
        for suffix in ("", "-wal"):
            try:
                data = open(ledger_url + suffix, "rb").read()
            except FileNotFoundError:
                continue
            assert secret.encode() not in data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["issue", "revoke", "deactivate", "reactivate"]), st.integers(0, 3)), max_size=12
    )
)
def test_token_list_matches_a_model_of_the_operations(tmp_path_factory, ops):
    """Oracle: a dict of token -> revoked, and the principal's status, kept beside the ledger."""
    with AccessLedger.open(str(tmp_path_factory.mktemp("p") / "l.db"), create=True) as led:
        led.init()
        led.create_user("u")
        ids: list[str] = []
        revoked: set[str] = set()
        active = True
        for op, n in ops:
            head = led.head()
            try:
                if op == "issue":
                    ids.append(api.create_token(led, "user:u", ["read"], actor="system")["token_id"])
                    assert active
                elif op == "revoke":
                    target = ids[n % len(ids)] if ids else "missing"
                    api.revoke_token(led, target, actor="system")
                    assert target in ids and target not in revoked
                    revoked.add(target)
                elif op == "deactivate":
                    led.deactivate_user("u")
                    assert active
                    active = False
                else:
                    led.reactivate_user("u")
                    assert not active
                    active = True
            except E.LedgerError:
                assert led.head() == head  # refused, and nothing written
        rows = {r["token_id"]: r["status"] for r in api.list_tokens(led)["rows"]}
        expected = {t: "revoked" if t in revoked else ("active" if active else "principal deactivated") for t in ids}
        assert rows == expected


def test_a_tokens_recorded_first_use_is_a_usage_fact_not_a_change_without_reason(tled):
    from reports.audits import run_audit
    from reports.warehouse import Warehouse

    got = api.create_token(tled, "service_account:ci", ["read"], actor="system", reason="CI reads")
    tled.append({"type": "TokenUsed", "at": None, "actor": "service_account:ci", "token_id": got["token_id"]})
    with Warehouse.open(tled, ":memory:") as wh:
        rows = run_audit(wh, "hygiene").rows
    assert not [r for r in rows if r["finding"] == "change-without-reason" and r["what"] == "TokenUsed"], rows
    assert not [r for r in rows if r["finding"] == "token-never-used"]
