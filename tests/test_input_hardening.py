"""Hostile input, smaller cases (issue #15): duplicate JSON keys, actors nobody recorded, look-alike and
invisible characters in identifiers, times at the limits of the calendar and deep nesting. Each ends in
one `Error: ...` line, exit 2, and a ledger left exactly as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger import errors as E
from ledger.app import AccessLedger
from ledger.events import encode, parse_json

runner = CliRunner()
T0 = "2026-01-01T00:00:00Z"


def run(url: str, *args: str, actor: str = "user:root"):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": actor})


@pytest.fixture
def cli_ledger(ledger_url) -> str:
    """A ledger with tenant prod, users root (the actor of the tests' commands), alice and old (deactivated),
    and service account ci."""
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(org="acme", at=T0)
        led.create_tenant("prod", at=T0)
        for user in ("root", "alice", "old"):
            led.create_user(user, at=T0)
        led.deactivate_user("old", at=T0)
        led.create_service_account("ci", at=T0)
    return ledger_url


def state(url: str) -> tuple[int, str, bytes]:
    """Head position, head link and every event's bytes."""
    with AccessLedger.open(url) as led:
        return led.head(), led.store.head()[2], b"".join(led.export_lines())


def refused(url: str, result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == message + "\n"


def event(**fields) -> dict:
    return {"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", **fields}


def write_lines(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines))
    return path


# -- 1. duplicate keys ------------------------------------------------------------------------

DUPLICATES = [
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"alice2","user":"mallory"}',
        "duplicate key 'user'",
    ),
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"carl", "user" : "mallory"}',
        "duplicate key 'user'",
    ),
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"carl","us\\u0065r":"mallory"}',
        "duplicate key 'user'",
    ),
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","actor":"user:root","user":"carl"}',
        "duplicate key 'actor'",
    ),
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"carl","reason":"x","reason":null}',
        "duplicate key 'reason'",
    ),
    (
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":{"name":"a","name":"b"}}',
        "duplicate key 'name'",
    ),
    (
        '{"type":"RoleCreated","at":"2026-01-02T00:00:00Z","actor":"system","role":"r","scope":"tenant",'
        '"permissions":["model:read"],"permissions":[]}',
        "duplicate key 'permissions'",
    ),
]


@pytest.mark.parametrize("line, problem", DUPLICATES, ids=[p for _, p in DUPLICATES])
def test_import_refuses_a_duplicate_key_with_its_line_number(cli_ledger, tmp_path, line, problem):
    before = state(cli_ledger)
    good = orjson.dumps(event(user="carl")).decode()
    result = run(cli_ledger, "import", str(write_lines(tmp_path / "dup.jsonl", good, "", line)))
    refused(cli_ledger, result, f"Error: line 3: {problem}")
    assert state(cli_ledger) == before


def test_the_parallel_import_refuses_a_duplicate_key_too(cli_ledger):
    before = state(cli_ledger)
    lines = [orjson.dumps(event(user=f"u{i}", id=f"e{i}")) for i in range(30_000)]
    lines[25_000] = b'{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"a","user":"b"}'
    with AccessLedger.open(cli_ledger) as led, pytest.raises(E.ValidationError) as caught:
        led.import_lines(lines, workers=1)
    assert str(caught.value) == "line 25001: duplicate key 'user'"
    assert state(cli_ledger) == before


def test_check_batch_refuses_a_duplicate_key_with_its_line_number(cli_ledger, tmp_path):
    batch = write_lines(
        tmp_path / "q.jsonl",
        '{"principal":"user:alice","action":"read","resource":"model/m"}',
        '{"principal":"user:alice","action":"read","resource":"model/m","principal":"user:root"}',
    )
    refused(cli_ledger, run(cli_ledger, "check", "--batch", str(batch)), "Error: line 2: duplicate key 'principal'")
    nested = write_lines(
        tmp_path / "n.jsonl", '{"principal":"user:alice","action":"read","resource":"model/m","tenant":{"a":1,"a":2}}'
    )
    refused(cli_ledger, run(cli_ledger, "check", "--batch", str(nested)), "Error: line 1: duplicate key 'a'")


def _object_text(pairs: list[tuple[str, object]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


KEYS = st.sampled_from(
    ["type", "at", "actor", "user", "reason", "id", "role", "scope", "permissions", "add", "remove", "tenant", "email"]
)
LEAVES = st.one_of(
    st.sampled_from(
        [
            "UserCreated",
            "RoleCreated",
            "RolePermissionsChanged",
            T0,
            "system",
            "tenant",
            'a"b',
            'x": "y',
            "\\",
            "u",
            "model:read",
        ]
    ),
    st.none(),
    st.integers(),
    st.lists(st.sampled_from(["model:read", '"', ":"]), max_size=3),
)


@settings(max_examples=3000, deadline=None)
@given(
    pairs=st.lists(st.tuples(KEYS, LEAVES), min_size=1, max_size=9), base=st.sampled_from(["user", "role", "change"])
)
def test_fuzz_a_line_with_a_repeated_key_is_always_refused_and_only_then(pairs, base):
    """The one-count shortcut of parse_json never misses a repeated key, whatever the values hold."""
    start = {
        "user": [("type", "UserCreated"), ("at", T0), ("actor", "system"), ("user", "u")],
        "role": [
            ("type", "RoleCreated"),
            ("at", T0),
            ("actor", "system"),
            ("role", "r"),
            ("scope", "tenant"),
            ("permissions", ["model:read"]),
        ],
        "change": [("type", "RolePermissionsChanged"), ("at", T0), ("actor", "system"), ("role", "r")],
    }[base]
    all_pairs = start + pairs
    repeated = len({k for k, _ in all_pairs}) < len(all_pairs)
    for text in (_object_text(all_pairs), _object_text(all_pairs).replace(":", " : ")):
        try:
            parse_json(text.encode())
        except E.ValidationError as exc:
            assert ("duplicate key" in str(exc)) == repeated, (text, str(exc))
            continue
        assert not repeated, text


# -- 2. actors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actor, message",
    [
        (
            "user:nobody",
            "Error: actor: unknown principal 'user:nobody' (never recorded in this ledger; use system or "
            "a recorded user:NAME or service_account:NAME)",
        ),
        (
            "user:alicf",
            "Error: actor: unknown principal 'user:alicf' (never recorded in this ledger; closest: user:alice)",
        ),
        (
            "service_account:cj",
            "Error: actor: unknown principal 'service_account:cj' (never recorded in this ledger; "
            "closest: service_account:ci)",
        ),
        (
            "team:admins",
            "Error: actor: 'team:admins' is a team; a change is made by a user or service account (or system)",
        ),
        ("nobody", "Error: actor: 'nobody' is not user:NAME, team:NAME or service_account:NAME"),
    ],
)
def test_a_change_by_an_actor_the_ledger_never_recorded_is_refused(cli_ledger, actor, message):
    before = state(cli_ledger)
    refused(cli_ledger, run(cli_ledger, "tenant", "create", "qa", "--actor", actor), message)
    refused(cli_ledger, run(cli_ledger, "tenant", "create", "qa", actor=actor), message)  # $ACCESS_LEDGER_ACTOR
    assert state(cli_ledger) == before


@pytest.mark.parametrize("actor", ["system", "user:root", "user:old", "service_account:ci", "user:\uff41lice"])
def test_a_change_by_system_or_a_recorded_principal_is_recorded(cli_ledger, actor):
    """Deactivated principals still existed (old), and a look-alike spelling is its NFKC form (alice)."""
    result = run(cli_ledger, "tenant", "create", "qa", "--actor", actor)
    assert result.exit_code == 0, result.output
    with AccessLedger.open(cli_ledger) as led:
        assert list(led.read())[-1][1]["actor"] == ("user:alice" if "lice" in actor else actor)


def test_init_and_imports_take_any_well_formed_actor(ledger_url, tmp_path):
    result = run(ledger_url, "init", "--actor", "user:founder", "--at", T0)
    assert result.exit_code == 0, result.output
    history = write_lines(tmp_path / "h.jsonl", orjson.dumps(event(actor="user:platform-admin", user="zoe")))
    result = run(ledger_url, "import", str(history))
    assert result.exit_code == 0, result.output
    with AccessLedger.open(ledger_url) as led:
        assert [e["actor"] for _, e in led.read()] == ["user:founder", "user:platform-admin"]


def test_the_actor_option_says_what_it_takes():
    help_text = " ".join(runner.invoke(app, ["tenant", "create", "--help"]).stdout.split())
    assert "this ledger has recorded" in help_text
    assert "Imported JSONL may name any actor" in help_text


# -- 3. identifiers ---------------------------------------------------------------------------

BAD_CHARACTERS = [
    ("\u200b", "contains U+200B (ZERO WIDTH SPACE), an invisible or non-printing character"),
    ("\u200d", "contains U+200D (ZERO WIDTH JOINER), an invisible or non-printing character"),
    ("\u2060", "contains U+2060 (WORD JOINER), an invisible or non-printing character"),
    ("\u2064", "contains U+2064 (INVISIBLE PLUS), an invisible or non-printing character"),
    ("\ufeff", "contains U+FEFF (ZERO WIDTH NO-BREAK SPACE), an invisible or non-printing character"),
    ("\u00ad", "contains U+00AD (SOFT HYPHEN), an invisible or non-printing character"),
    (
        "\u200e",
        "contains U+200E (LEFT-TO-RIGHT MARK), a bidirectional control character (it changes how the "
        "name is displayed)",
    ),
    (
        "\u202e",
        "contains U+202E (RIGHT-TO-LEFT OVERRIDE), a bidirectional control character (it changes how "
        "the name is displayed)",
    ),
    (
        "\u2067",
        "contains U+2067 (RIGHT-TO-LEFT ISOLATE), a bidirectional control character (it changes how "
        "the name is displayed)",
    ),
    ("\x07", "contains the control character U+0007"),
    ("\x85", "contains the control character U+0085"),
]


@pytest.mark.parametrize("char, problem", BAD_CHARACTERS, ids=[f"U+{ord(c):04X}" for c, _ in BAD_CHARACTERS])
def test_an_identifier_with_an_invisible_or_reordering_character_is_refused(cli_ledger, tmp_path, char, problem):
    before = state(cli_ledger)
    refused(cli_ledger, run(cli_ledger, "user", "create", f"ev{char}e"), f"Error: user: {problem}")
    refused(cli_ledger, run(cli_ledger, "tenant", "create", f"q{char}a"), f"Error: tenant: {problem}")
    refused(
        cli_ledger,
        run(
            cli_ledger,
            "access",
            "record",
            "user:alice",
            "read",
            f"model/m{char}1",
            "--tenant",
            "prod",
            "--outcome",
            "allowed",
        ),
        f"Error: resource: {problem}",
    )
    refused(
        cli_ledger,
        run(cli_ledger, "role", "assign", "viewer", "--to", f"user:al{char}ice", "--tenant", "prod"),
        f"Error: principal: {problem}",
    )
    lines = [orjson.dumps(event(user="fine")), orjson.dumps(event(user=f"ev{char}e"))]
    refused(
        cli_ledger,
        run(cli_ledger, "import", str(write_lines(tmp_path / "x.jsonl", *lines))),
        f"Error: line 2: user: {problem}",
    )
    assert state(cli_ledger) == before


def test_identifiers_are_stored_in_nfkc_form(cli_ledger):
    assert run(cli_ledger, "user", "create", "\uff42\uff4f\uff42").exit_code == 0  # fullwidth bob
    refused(cli_ledger, run(cli_ledger, "user", "create", "bob"), "Error: user 'bob' already exists")
    assert run(cli_ledger, "role", "assign", "viewer", "--to", "user\uff1a\ufb01le", "--tenant", "prod").exit_code == 2
    assert run(cli_ledger, "user", "create", "\ufb01le").exit_code == 0  # the ligature fi
    assert run(cli_ledger, "role", "assign", "viewer", "--to", "user:\ufb01le", "--tenant", "\uff50rod").exit_code == 0
    with AccessLedger.open(cli_ledger) as led:
        events = [e for _, e in led.read()][-3:]
    assert [e.get("user") or e.get("principal") for e in events] == ["bob", "file", "user:file"]
    assert events[-1]["tenant"] == "prod"


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":"alice"}',
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"user:root","user":"ünïcødé","email":"ü@x.de"}',
        '{"type":"RoleAssigned","at":"2026-01-02T00:00:00.123456Z","actor":"system","role":"viewer",'
        '"principal":"user:Ärger","tenant":"prod","resource":"model/größe-1","reason":"SEC-1 \u202e text","id":"k-1"}',
        '{"type":"TeamCreated","at":"2026-01-02T00:00:00Z","actor":"system","team":"日本語チーム"}',
    ],
)
def test_a_canonical_event_encodes_to_the_same_bytes_as_before(line):
    """Existing ledgers still verify: an event already in canonical (and NFKC) form is unchanged."""
    assert encode(parse_json(line.encode())) == line.encode()


# -- 5. times at the limits, deep nesting -----------------------------------------------------

LIMIT_TIMES = [
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00Z",
]


@pytest.mark.parametrize("when", LIMIT_TIMES)
def test_an_instant_at_the_calendars_limits_is_refused_with_its_line_number(cli_ledger, tmp_path, when):
    before = state(cli_ledger)
    outside = f"'{when}' is outside the years 1970-9998"
    lines = [orjson.dumps(event(user="fine")), orjson.dumps(event(user="zed", at=when))]
    refused(
        cli_ledger,
        run(cli_ledger, "import", str(write_lines(tmp_path / "t.jsonl", *lines))),
        f"Error: line 2: at: {outside}",
    )
    assign = {
        "type": "RoleAssigned",
        "at": "2026-01-02T00:00:00Z",
        "actor": "system",
        "role": "viewer",
        "principal": "user:alice",
        "tenant": "prod",
        "expires_at": when,
    }
    refused(
        cli_ledger,
        run(cli_ledger, "import", str(write_lines(tmp_path / "x.jsonl", orjson.dumps(assign)))),
        f"Error: line 1: expires_at: {outside}",
    )
    refused(cli_ledger, run(cli_ledger, "user", "create", "zed", "--at", when), f"Error: at: {outside}")
    refused(
        cli_ledger,
        run(cli_ledger, "check", "user:alice", "read", "model/m", "--tenant", "prod", "--at", when),
        f"Error: at: {outside}",
    )
    batch = write_lines(
        tmp_path / "q.jsonl",
        json.dumps({"principal": "user:alice", "action": "read", "resource": "model/m", "at": when}),
    )
    refused(cli_ledger, run(cli_ledger, "check", "--batch", str(batch)), f"Error: line 1: at: {outside}")
    assert state(cli_ledger) == before


def test_a_window_longer_than_the_calendar_is_refused(cli_ledger, tmp_path):
    result = runner.invoke(
        app,
        [
            "--db",
            cli_ledger,
            "audit",
            "least-privilege",
            "--window",
            "99999999999999d",
            "--warehouse",
            str(tmp_path / "w.duckdb"),
        ],
    )
    refused(cli_ledger, result, "Error: window: '99999999999999d' is longer than 1000 years")


NESTED = "line is nested too deeply (JSON arrays and objects within each other)"


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_one_clear_error(cli_ledger, tmp_path, depth):
    before = state(cli_ledger)
    deep = "[" * depth + "]" * depth
    lines = [
        orjson.dumps(event(user="fine")).decode(),
        '{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"system","user":' + deep + "}",
    ]
    refused(
        cli_ledger,
        run(cli_ledger, "import", str(write_lines(tmp_path / "d.jsonl", *lines))),
        f"Error: line 2: {NESTED}",
    )
    refused(
        cli_ledger, run(cli_ledger, "import", str(write_lines(tmp_path / "e.jsonl", deep))), f"Error: line 1: {NESTED}"
    )
    question = '{"principal":"user:alice","action":"read","resource":"model/m"}'
    batch = write_lines(tmp_path / "q.jsonl", question, '{"principal":' + deep + "}")
    refused(cli_ledger, run(cli_ledger, "check", "--batch", str(batch)), f"Error: line 2: {NESTED}")
    objects = write_lines(tmp_path / "o.jsonl", question, '{"a":' * depth + "1" + "}" * depth)
    refused(cli_ledger, run(cli_ledger, "check", "--batch", str(objects)), f"Error: line 2: {NESTED}")
    assert state(cli_ledger) == before


def test_check_batch_refuses_invalid_utf8_and_odd_values_in_one_line(cli_ledger, tmp_path):
    question = b'{"principal":"user:alice","action":"read","resource":"model/m"'
    cases = [
        (question + b"}\n" + question + b',"tenant":"pr\xffod"}\n', "Error: line 2: line is not valid UTF-8"),
        (question + b',"tenant":5}\n', "Error: line 1: tenant: must be a text (a tenant's name)"),
        (question + b',"position":true}\n', "Error: line 1: position: must be a whole number >= 0"),
        (question + b',"position":1e999}\n', "Error: line 1: position: must be a whole number >= 0"),
        (question + b',"position":' + b"9" * 5000 + b"}\n", "Error: line 1: line is not valid JSON"),
    ]
    for data, message in cases:
        (tmp_path / "q.jsonl").write_bytes(data)
        refused(cli_ledger, run(cli_ledger, "check", "--batch", str(tmp_path / "q.jsonl")), message)


# -- fuzz: times at the limits, nesting, repeated keys -----------------------------------------

EDGE_TIMES = st.one_of(
    st.sampled_from(
        LIMIT_TIMES
        + [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "9998-12-31T23:59:59Z",
            "9998-12-31T23:59:59-01:00",
            "2026-01-02T00:00:00Z",
            "2026-01-02T00:00:00-24:00",
            "2026-01-02T00:00:00+25:00",
            "99999-01-01T00:00:00Z",
        ]
    ),
    st.builds(
        lambda y, off: f"{y:04d}-12-31T23:59:59{off}",
        st.sampled_from([1, 1969, 1970, 9998, 9999]),
        st.sampled_from(["Z", "+00:00", "-00:01", "+00:01", "-23:59", "+23:59", "-12:00", "+14:00"]),
    ),
)


@st.composite
def nested(draw) -> str:
    """JSON text of arrays or objects within each other, up to far deeper than any parser recurses."""
    text = draw(st.sampled_from(['"x"', "1", "null"]))
    depth = draw(st.sampled_from([0, 1, 5, 300, 1100, 5000]))
    if draw(st.booleans()):
        return "[" * depth + text + "]" * depth
    return '{"k":' * depth + text + "}" * depth


@st.composite
def hostile_lines(draw) -> bytes:
    obj = event(user=draw(st.sampled_from(["u", "\uff55", "u\u200b", "u\u202e"])), at=draw(EDGE_TIMES))
    if draw(st.booleans()):
        obj = {
            "type": "RoleAssigned",
            "at": draw(EDGE_TIMES),
            "actor": "system",
            "role": "viewer",
            "principal": "user:alice",
            "tenant": "prod",
            "expires_at": draw(EDGE_TIMES),
        }
    text = orjson.dumps(obj).decode()
    choice = draw(st.integers(0, 3))
    if choice == 1:
        text = text[:-1] + ',"reason":' + draw(nested()) + "}"
    elif choice == 2:
        key = draw(st.sampled_from(list(obj)))
        text = text[:-1] + f',"{key}":' + json.dumps(obj[key]) + "}"
    elif choice == 3:
        text = draw(nested())
    return text.encode()


@settings(max_examples=2000, deadline=None)
@given(line=hostile_lines())
def test_fuzz_limits_nesting_and_repeats_end_as_an_event_or_one_clear_error(line):
    try:
        parsed = parse_json(line)
    except E.ValidationError as exc:
        message = str(exc)
        assert message and "\n" not in message and "unexpected" not in message
        return
    assert parsed["at"].endswith("Z") and "1970" <= parsed["at"][:4] <= "9998"


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("hardening") / "fuzz.db")
    with AccessLedger.open(db, create=True) as led:
        led.init(at=T0)
        led.create_tenant("prod", at=T0)
        led.create_user("alice", at=T0)
    return db


def _fingerprint(db: str) -> tuple[int, str]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT position, link FROM al_head").fetchone()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(hostile_lines(), min_size=1, max_size=3))
def test_fuzz_import_and_check_batch_of_hostile_lines_end_in_one_error_line(fuzz_db, tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("fz")
    before = _fingerprint(fuzz_db)
    imported = run(fuzz_db, "import", str(write_lines(folder / "i.jsonl", *lines)), actor="system")
    assert "Traceback" not in imported.output
    if imported.exit_code != 0:
        assert imported.exit_code == 2, imported.output
        assert imported.stderr.startswith("Error: line ") and imported.stderr.count("\n") == 1
        assert "unexpected" not in imported.stderr
        assert _fingerprint(fuzz_db) == before
    questions = []
    for line in lines:
        text = line.decode()
        if text.startswith("{") and '"at":' in text:
            at = text.split('"at":', 1)[1]
            questions.append('{"principal":"user:alice","action":"read","resource":"model/m","at":' + at)
        else:
            questions.append(text)
    checked = run(fuzz_db, "check", "--batch", str(write_lines(folder / "q.jsonl", *questions)))
    assert "Traceback" not in checked.output
    assert checked.exit_code in (0, 1, 2), checked.output
    if checked.exit_code == 2:
        assert checked.stderr.startswith("Error: line ") and checked.stderr.count("\n") == 1
        assert "unexpected" not in checked.stderr
