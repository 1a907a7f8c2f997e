"""A write's statements do not grow with the names its events mention: a batch of platform facts about
many principals reads them in one statement per kind, and refuses an unknown one as before."""

from __future__ import annotations

import orjson
import pytest

import ledger.errors as E
from ledger.app import AccessLedger
from ledger.store import Cursor

AT = "2026-01-01T00:00:00Z"


def fact(n: int, principal: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "ResourceAccessed",
            "at": AT,
            "actor": "system",
            "principal": principal or f"user:u{n % 120}",
            "tenant": f"t{n % 3}",
            "resource": f"model/m{n % 7}",
            "action": "read",
            "outcome": "allowed",
        }
    )


@pytest.fixture
def many(ledger_url):
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(at=AT)
        for t in range(3):
            led.create_tenant(f"t{t}", at=AT)
        led.import_lines(
            [orjson.dumps({"type": "UserCreated", "at": AT, "actor": "system", "user": f"u{n}"}) for n in range(120)]
        )
        yield led


def test_a_batch_of_facts_about_many_principals_takes_a_bounded_number_of_statements(many, monkeypatch):
    statements = []
    real = Cursor.execute
    monkeypatch.setattr(
        Cursor, "execute", lambda self, sql, params=(): statements.append(sql) or real(self, sql, params)
    )
    before = many.head()
    result = many.import_lines([fact(n) for n in range(600)])
    assert (result.written, result.first, result.last) == (600, before + 1, before + 600)
    assert result.head == (many.head(), many.store.head()[2])
    assert len(statements) <= 30, len(statements)


def test_an_unknown_principal_among_many_is_refused_naming_its_line_and_nothing_is_written(many):
    before = many.head()
    lines = [fact(n) for n in range(300)]
    lines[137] = fact(137, "user:nobody")
    with pytest.raises(E.UnknownEntity) as info:
        many.import_lines(lines)
    assert str(info.value).startswith("line 138: ") and "unknown user 'nobody'" in str(info.value)
    assert many.head() == before
