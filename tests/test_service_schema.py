"""schemathesis against the running service's /openapi.json, with a token holding every scope: no 5xx,
and no response that breaks the schema it declares. One service for the session, bounded examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from test_server import Running, build, start, stop

from access_ledger import api
from ledger.app import AccessLedger

ALL_SCOPES = ["read", "audit", "report", "change", "review", "admin"]


@pytest.fixture(scope="session")
def fuzzed(tmp_path_factory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("schema")
    url = str(folder / "ledger.db")
    tokens = build(url)
    with AccessLedger.open(url) as led:
        tokens["all"] = api.create_token(led, "service_account:root", ALL_SCOPES, actor="system")["token"]
    running = start(url, folder / "server.log", tokens)
    yield running
    stop(running)


def test_no_5xx_and_every_answer_fits_its_schema(fuzzed):
    auth = {"Authorization": f"Bearer {fuzzed.tokens['all']}"}
    schema = schemathesis.openapi.from_url(fuzzed.base + "/openapi.json", headers=auth)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        # One hypothesis run per operation (schemathesis' pytest plugin does the same), each bounded.
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:
            case.call_and_validate(
                base_url=fuzzed.base,
                headers=auth,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=60,
            )

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every operation is tried; all failures are reported together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
