"""`access-ledger demo`: a year of a realistic ML platform, recorded and questioned."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from ledger.cli.common import db_url, fail, handled


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(ctx: typer.Context,
         force: Annotated[bool, typer.Option("--force", help="Replace an existing SQLite ledger file.")] = False,
         ) -> None:
    """Build a year of a realistic ML platform's access history and ask it the auditor's questions."""
    from datetime import timedelta

    import orjson
    from rich.console import Console

    from ledger.app import AccessLedger
    from ledger.sample import year
    from ledger.timeutil import now
    from projections.answers import Question, check, who_can
    from projections.pit import Timeline

    console = Console()
    url = db_url(ctx)
    started = time.perf_counter()
    with handled():
        if not url.startswith(("postgresql://", "postgres://")) and os.path.exists(url):
            if not force:
                fail(f"{url} already exists: the demo builds a new ledger (give --db NEW.db, or --force to replace it)")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(url + suffix):
                    os.remove(url + suffix)
        led = AccessLedger.open(url, create=True)
        try:
            if led.head():
                fail(f"the ledger at {led.store.label} is not empty: the demo builds a new ledger")
            sample = year(now() - timedelta(hours=1))
            console.print(f"[bold]access-ledger demo[/]: a year of acme-ml's ML platform in {led.store.label}")
            result = led.import_lines(orjson.dumps(e) for e in sample.events)
            verified = led.verify()
            console.print(f"  recorded {result.written:,} events: 3 tenants, {len(led.entities('user'))} people, "
                          f"2 CI service accounts, 3 cloud connectors, 8 custom roles on the predefined ones")
            console.print(f"  verify: {'intact' if verified.ok else 'TAMPERED'}, hash chain over "
                          f"{verified.events:,} events, head link {verified.link[:16]}...")
            timeline = Timeline(led)
            breach = sample.moments["breach"]
            console.print()
            console.print(f"[bold]Who could read the production AWS credentials on {breach[:10]}?[/]")
            state = timeline.at_time(breach)
            for row in who_can(state, "read_secret_value", "service_connector/aws-prod", "production", breach):
                via = f" via team:{row['via_team']}" if row["via_team"] else ""
                console.print(f"  {row['principal']:<32} role {row['role']}{via} (granted {row['granted_at'][:10]} "
                              f"by {row['granted_by']}, {row['reason'] or 'no reason'})")
            console.print()
            console.print(f"[bold]user:ivan read those credentials at {breach}: was he allowed?[/]")
            answer = check(state, Question("user:ivan", "read_secret_value", "service_connector/aws-prod",
                                           "production"), breach)
            verdict = "allowed" if answer["allowed"] else f"NO: {answer['why_not']}"
            console.print(f"  {verdict}")
            console.print()
            deploy = check(timeline.current(), Question("service_account:ci-deployer", "create",
                                                        "pipeline_deployment/fraud-detector", "production"),
                           sample.moments["end"])
            console.print("[bold]May the CI service account deploy to production now?[/] "
                          f"{'yes' if deploy['allowed'] else 'no'}, because:")
            for link in deploy["paths"][0]["links"] if deploy["paths"] else []:
                where = f"#{link['position']} {link['at'][:10]}" if link["position"] else "preset"
                console.print(f"  {link['link']:<58} ({where}, {link['actor']}, {link['reason'] or 'no reason'})")
            console.print()
            console.print("[bold]Planted in this history[/] (what a review should find):")
            for incident in sample.incidents:
                console.print(f"  {incident.kind:<26} {incident.principal:<14} {incident.where:<11} {incident.detail}")
        finally:
            led.close()
    elapsed = time.perf_counter() - started
    db = "" if url == "access-ledger.db" else f" --db {url}"
    console.print()
    console.print(f"done in {elapsed:.1f} s. Next, try:")
    console.print(f"  access-ledger{db} check user:ivan read_secret_value service_connector/aws-prod "
                  f"--tenant production --at {breach}")
    console.print(f"  access-ledger{db} explain user:hana promote model_version/fraud-v3 --tenant production")
    console.print(f"  access-ledger{db} who-can read_secret_value service_connector/aws-prod --tenant production")
