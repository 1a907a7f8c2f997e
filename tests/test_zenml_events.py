"""The events a ZenML sync records, judged like every event: what the write model refuses, and authority."""

from __future__ import annotations

import pytest

from ledger import errors as E
from ledger.app import AccessLedger

AT = "2026-01-02T00:00:00Z"


def ev(kind: str, actor: str = "system", **fields) -> dict:
    return {"type": kind, "at": AT, "actor": actor, **fields}


KEY = {"service_account": "ci", "api_key": "deploy"}


@pytest.fixture
def zled(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    led.append_many(
        [
            {"type": "OrganizationCreated", "at": AT, "actor": "system", "name": "z", "preset": "zenml-oss-098"},
            ev("TenantCreated", tenant="zenml"),
            ev("ServiceAccountCreated", service_account="ci"),
            ev("UserCreated", user="alice"),
            ev("ConnectorRegistered", connector="aws", tenant="zenml"),
            ev("ApiKeyCreated", **KEY),
        ]
    )
    yield led
    led.close()


@pytest.mark.parametrize(
    "event, message",
    [
        (ev("ApiKeyCreated", **KEY), "API key 'deploy' of service account 'ci' already exists"),
        (ev("ApiKeyCreated", service_account="nobody", api_key="k"), "unknown service account 'nobody'"),
        (ev("ApiKeyReactivated", **KEY), "api_key: API key 'deploy' of service account 'ci' is active"),
        (ev("ApiKeyRotated", **KEY, rotated_at="2026-01-03T00:00:00Z"), "rotated_at: 2026-01-03T00:00:00Z is after"),
        (ev("ApiKeyUsed", **KEY, last_login="2026-01-03T00:00:00Z"), "last_login: 2026-01-03T00:00:00Z is after"),
        (ev("ApiKeyDeleted", service_account="ci", api_key="other"), "unknown API key 'other' of service account 'ci'"),
        (ev("ConnectorChanged", connector="gcp", tenant="zenml"), "unknown service connector 'gcp' in tenant 'zenml'"),
        (ev("ConnectorChanged", connector="aws", tenant="zenml", owner="user:bob"), "unknown user 'bob'"),
        (ev("ProjectDeleted", project="p", tenant="zenml"), "unknown project 'p' in tenant 'zenml'"),
        (ev("ConnectorChanged", connector="aws", tenant="zenml", secret="x"), "secret: unknown field"),
    ],
)
def test_zenml_events_are_refused_when_they_do_not_fit_and_nothing_is_written(zled, event, message):
    head = zled.head()
    with pytest.raises(E.LedgerError) as caught:
        zled.append(event)
    assert message in str(caught.value)
    assert zled.head() == head


def test_a_deleted_keys_name_may_be_reused_and_a_project_only_once(zled):
    zled.append(ev("ApiKeyDeleted", **KEY))
    zled.append(ev("ApiKeyCreated", **KEY))
    zled.append(ev("ProjectCreated", project="p", tenant="zenml"))
    with pytest.raises(E.DuplicateEntity, match="project 'p' already exists in tenant 'zenml'"):
        zled.append(ev("ProjectCreated", project="p", tenant="zenml"))


def test_an_enforcing_ledger_refuses_key_events_from_a_non_admin(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    try:
        led.init(org="z", preset="zenml-oss-098", enforce_authority=True, at=AT)
        led.append_many([ev("ServiceAccountCreated", service_account="ci"), ev("UserCreated", user="mallory")])
        with pytest.raises(E.Unauthorised, match="actor: user:mallory lacks member:update"):
            led.append(ev("ApiKeyCreated", actor="user:mallory", **KEY))
        led.append(ev("RoleAssigned", role="admin", principal="user:mallory"))
        led.append(ev("ApiKeyCreated", actor="user:mallory", **KEY))
    finally:
        led.close()
