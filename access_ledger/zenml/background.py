"""`serve --sync-zenml URL`: the `sync zenml --interval` loop on a thread of the service's process."""

from __future__ import annotations

import logging
import threading

from access_ledger.zenml.client import ZenMLClient
from access_ledger.zenml.sync import Syncer, SyncResult, loop

log = logging.getLogger("access_ledger.zenml")


def start(db: str, url: str, username: str, password: str, tenant: str, interval: float) -> threading.Event:
    """Log in now (a refusal raises here, before the service starts), then sync every `interval` seconds on a
    daemon thread with its own ledger connection; set the returned event to stop it."""
    from ledger.app import AccessLedger

    client = ZenMLClient(url)
    client.login(username, password)
    led = AccessLedger.open(db)
    syncer = Syncer(led, client, tenant)
    stop = threading.Event()

    def report(result: SyncResult | Exception) -> None:
        if isinstance(result, Exception):
            log.error("sync zenml %s: %s", client.url, result)
        else:
            for line in result.refused:
                log.warning("sync zenml %s: %s", result.url, line)
            log.info("sync zenml %s into tenant %s: %d events recorded", result.url, result.tenant, result.recorded)

    def run() -> None:
        try:
            loop(syncer, interval, report, stop)
        finally:
            client.close()
            led.close()

    threading.Thread(target=run, name="sync-zenml", daemon=True).start()
    return stop
