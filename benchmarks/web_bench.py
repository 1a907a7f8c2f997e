"""The reviewer's first page of a 5,000-item campaign: server time to render it, browser time to load it.

    python benchmarks/web_bench.py [--items 5000] [--runs 5]

Builds a ledger of N users, each with one role in tenant prod (every tenth one privileged), and a
campaign over prod reviewed by user:rita; starts `access-ledger serve` on a free loopback port, signs in
as rita and times:
  - the service's own derivation of the campaign's items with their context as it starts (then cached);
  - the first request of /web/ after that;
  - later requests of /web/ (the server's time, from its access log line, and the client's round trip);
  - the page loaded in Debian's Chromium through playwright (navigation start to the load event).
Target: the first page within 500 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def build(url: str, n: int) -> str:
    from access_ledger import api
    from ledger.app import AccessLedger
    from projections.reviews import start_event

    t0 = "2026-10-01T00:00:00Z"
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at=t0)
        led.create_tenant("prod", at=t0)
        events = [{"type": "UserCreated", "at": t0, "actor": "system", "user": u} for u in ("olivia", "rita", "sam")]
        for i in range(n):
            events.append({"type": "UserCreated", "at": t0, "actor": "system", "user": f"u{i:05}"})
            role = "admin" if i % 10 == 0 else "viewer"
            events.append(
                {
                    "type": "RoleAssigned",
                    "at": t0,
                    "actor": "user:olivia",
                    "role": role,
                    "principal": f"user:u{i:05}",
                    "tenant": "prod",
                    "reason": f"TICKET-{i}",
                }
            )
        led.append_many(events)
        event, items = start_event(
            led, "q4", ["prod"], "user:rita", [], "user:sam", False, None, None, "user:olivia", None
        )
        led.append(event)
        assert len(items) == n
        return api.create_token(led, "user:rita", ["review"], actor="system")["token"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_ms(log: Path) -> float:
    """The duration of the last GET /web/ in the service's access log."""
    lines = [x for x in log.read_text().splitlines() if "GET /web/ 200" in x]
    return float(re.search(r"([0-9.]+)ms$", lines[-1]).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = str(folder / "ledger.db")
        started = time.perf_counter()
        token = build(url, args.items)
        print(f"ledger of {args.items:,} items built in {time.perf_counter() - started:.1f} s")
        port = free_port()
        log = folder / "server.log"
        exe = Path(sys.executable).parent / "access-ledger"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(exe), "--db", url, "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
            )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for _ in range(600):  # the service derives open campaigns' items as it starts
                if "open campaigns ready" in log.read_text():
                    break
                time.sleep(0.05)
            warmed = re.search(r"ready in ([0-9]+) ms", log.read_text())
            client = httpx.Client(base_url=base, timeout=120)
            pre = re.search(r'name="csrf" value="([^"]+)"', client.get("/web/signin").text).group(1)
            assert client.post("/web/signin", data={"csrf": pre, "token": token}).status_code == 303
            t = time.perf_counter()
            first = client.get("/web/")
            cold_client = (time.perf_counter() - t) * 1000
            assert first.status_code == 200 and f"of your {args.items} items" in first.text
            cold_server = server_ms(log)
            warm_server, warm_client = [], []
            for _ in range(args.runs):
                t = time.perf_counter()
                assert client.get("/web/").status_code == 200
                warm_client.append((time.perf_counter() - t) * 1000)
                warm_server.append(server_ms(log))
            browser_ms = []
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                context = browser.new_context()
                context.add_cookies([{"name": "al_session", "value": client.cookies["al_session"], "url": base}])
                page = context.new_page()
                for _ in range(args.runs):
                    page.goto(base + "/web/", wait_until="load")
                    browser_ms.append(
                        page.evaluate(
                            "(() => { const n = performance.getEntriesByType('navigation')[0];"
                            " return [n.responseEnd - n.startTime, n.loadEventEnd - n.startTime]; })()"
                        )
                    )
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    med = statistics.median
    print(f"the service derived the campaign's items as it started, in {warmed.group(1) if warmed else '?'} ms")
    print(f"first /web/ after that: server {cold_server:.0f} ms, client {cold_client:.0f} ms")
    print(f"later /web/ (median of {args.runs}): server {med(warm_server):.0f} ms, client {med(warm_client):.0f} ms")
    print(
        f"browser (median of {args.runs}, from navigation start): page received {med(b[0] for b in browser_ms):.0f} ms, "
        f"load event {med(b[1] for b in browser_ms):.0f} ms"
    )
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
    print("target: the first page within 500 ms")


if __name__ == "__main__":
    main()
