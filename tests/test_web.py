"""The reviewers' pages in a real service and a real browser (Debian's Chromium through playwright).

One service per backend for the session, on a ledger with one campaign (owner user:olivia, reviewer
user:rita); the browser flow signs in, filters, decides, batches, is refused a self-review, reassigns and
closes, and the ledger then holds exactly those events. The attacks post forged forms and cookies and check
that nothing is recorded. Screenshots of the two pages are written to docs/ for the README.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import BACKENDS, PG, _drop_schema, make_url

from access_ledger import api
from ledger.app import AccessLedger
from projections.reviews import start_event

DOCS = Path(__file__).resolve().parent.parent / "docs"
T0 = "2026-10-01T00:00:00Z"
EVIL = "<script>window.__pwned=1</script>"
EVIL_REASON = '"><img src=x onerror="window.__pwned=2">'


@dataclass
class Site:
    url: str  # the ledger
    base: str
    tokens: dict[str, str]
    setup_head: int
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(url: str) -> tuple[dict[str, str], int]:
    """The campaign q4: 17 items of tenant prod, reviewed by rita (her own by sam), run by olivia."""
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at=T0)
        led.create_tenant("prod", at=T0)
        for u in ("olivia", "rita", "sam", "mallory", "auditor", EVIL, *(f"u{n:02}" for n in range(1, 14))):
            led.create_user(u, at=T0)
        for n in range(1, 11):
            led.assign_role("viewer", f"user:u{n:02}", tenant="prod", reason=f"TICKET-{n}", at=T0, actor="user:olivia")
        led.assign_role("admin", "user:u11", tenant="prod", reason="on-call", at=T0)
        led.assign_role("editor", "user:rita", tenant="prod", reason="reviewer's own", at=T0)
        led.assign_role("viewer", f"user:{EVIL}", tenant="prod", reason=EVIL_REASON, at=T0)
        led.create_team("research", at=T0)
        for u in ("u12", "u13"):
            led.add_team_member("research", f"user:{u}", at=T0, reason="joined research")
        led.create_role("ds", "tenant", ["model:promote"], base="editor", at=T0)
        led.assign_role("ds", "team:research", tenant="prod", at=T0)
        led.assign_role("viewer", "team:research", tenant="prod", at=T0)
        led.create_tenant("stage", at=T0)
        led.assign_role("admin", "user:u12", tenant="stage", at=T0)
        led.assign_role("editor", "user:rita", tenant="stage", at=T0)
        led.assign_role("viewer", f"user:{EVIL}", tenant="stage", reason=EVIL_REASON, at=T0)
        # "side" (stage: item 1 EVIL's, item 2 rita's own, reviewed by sam; item 3 u12's admin) stays open
        # for the attacks
        event, _ = start_event(
            led, "side", ["stage"], "user:rita", [], "user:sam", False, None, None, "user:olivia", None
        )
        led.append(event)
        event, _ = start_event(led, "q4", ["prod"], "user:rita", [], "user:sam", False, None, None, "user:olivia", None)
        led.append(event)
        tokens = {
            name: api.create_token(led, principal, scopes, actor="system")["token"]
            for name, principal, scopes in (
                ("rita", "user:rita", ["review"]),
                ("olivia", "user:olivia", ["review"]),
                ("mallory", "user:mallory", ["review"]),
                ("auditor", "user:auditor", ["audit"]),
                ("reader", "user:sam", ["read"]),
                ("evil", f"user:{EVIL}", ["review"]),
            )
        }
        return tokens, led.head()


@pytest.fixture(scope="session", params=BACKENDS)
def site(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"web-{request.param}")
    url, schema = make_url(request.param, folder)
    tokens, head = build(url)
    port = _free_port()
    log = (folder / "server.log").open("wb")
    exe = Path(sys.executable).parent / "access-ledger"
    proc = subprocess.Popen(
        [str(exe), "--db", url, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((folder / "server.log").read_text()[-2000:])
        time.sleep(0.1)
    yield Site(url, base, tokens, head, proc)
    proc.terminate()
    proc.wait(10)
    if schema and PG:
        _drop_schema(schema)


def head(site: Site) -> int:
    with AccessLedger.open(site.url) as led:
        return led.head()


def sign_in(browser, site: Site, who: str):
    """A fresh browser context signed in as `who`; its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A refusal is answered 409 with its message on the page: the browser logs that status, and only that.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "status of 409" not in m.text else None,
    )
    page.errors = errors
    page.goto(site.base + "/web/signin")
    page.get_by_label("Token").fill(site.tokens[who])
    page.get_by_role("button", name="Sign in").click()
    return page


def message(page) -> str:
    return page.locator("#message").inner_text()


def item_row(page, n: int):
    return page.locator(f"#item-{n}")


def number_of(page, principal: str, role: str = "viewer") -> int:
    """The item number of `principal`'s `role` on the current page."""
    row = page.locator("#items tbody tr", has_text=principal).filter(has_text=role).first
    return int(row.get_attribute("id").split("-")[1])


def test_a_reviewer_and_the_owner_do_a_campaign_in_the_browser(chromium, site):
    page = sign_in(chromium, site, "rita")
    assert "Signed in as user:rita" in page.locator("header").inner_text()
    assert "2 of your 2 items in campaign side" in page.locator("#summary").inner_text()
    page.get_by_label("Campaign").select_option("q4")
    page.get_by_role("button", name="Show").click()
    assert "16 of your 16 items" in page.locator("#summary").inner_text()
    # the grant's reason and who granted it, in plain words
    row = page.locator("#items tbody tr", has_text="user:u01").first
    assert "Granted by user:olivia on 2026-10-01: “TICKET-1”" in row.inner_text()
    assert "never used" in row.inner_text()
    team_row = page.locator("#items tbody tr", has_text="user:u12").first
    assert "through team research" in team_row.inner_text() and "Same team membership as item" in team_row.inner_text()
    if site.url.endswith(".db"):
        page.screenshot(path=str(DOCS / "web-reviewer.png"), full_page=False)

    # filter: privileged only
    page.get_by_label("Privileged only").check()
    page.get_by_role("button", name="Show").click()
    shown = page.locator("#items tbody tr").all_inner_texts()
    assert all("privileged" in t for t in shown) and any("user:u11" in t for t in shown)
    page.get_by_label("Privileged only").uncheck()
    page.get_by_label("Person or account").fill("u1")
    page.get_by_role("button", name="Show").click()
    assert {t.split("\t")[1].split()[0] for t in page.locator("#items tbody tr").all_inner_texts()} == {
        "user:u10",
        "user:u11",
        "user:u12",
        "user:u13",
    }
    page.get_by_label("Person or account").fill("")
    page.get_by_role("button", name="Show").click()

    # two decisions: keep a privileged item (a reason is needed), revoke one
    u11, u01 = number_of(page, "user:u11", "admin"), number_of(page, "user:u01")
    page.get_by_role("button", name="Keep").and_(page.locator(f"#keep-{u11}")).click()
    assert "keeping it needs a reason" in message(page)
    page.get_by_label(f"Reason for item {u11}").fill("on-call lead")
    page.locator(f"#keep-{u11}").click()
    assert message(page) == "Recorded 1 decision."
    page.get_by_label(f"Reason for item {u01}").fill("left the team")
    page.locator(f"#revoke-{u01}").click()
    assert message(page) == "Recorded 1 decision."
    assert "Revoked by user:rita" in item_row(page, u01).inner_text()

    # a batch of five, with a confirmation step
    batch = [number_of(page, f"user:u{n:02}") for n in range(2, 7)]
    for n in batch:
        page.get_by_label(f"Select item {n}").check()
    page.get_by_label("Keep", exact=True).check()
    page.get_by_label("Reason", exact=True).fill("still needed")
    page.get_by_role("button", name="Review the selection…").click()
    assert "keep these 5 items" in page.locator("#confirm-what").inner_text()
    page.get_by_role("button", name="Record these 5 decisions").click()
    assert message(page) == "Recorded 5 decisions."

    assert page.errors == []

    # the owner reassigns and closes
    owner = sign_in(chromium, site, "olivia")
    owner.get_by_role("link", name="Campaigns I run").click()
    q4 = owner.locator("section", has=owner.get_by_role("heading", name="Campaign q4"))
    assert "7 of 17 items decided" in q4.locator(".progress").inner_text()
    assert "71% of decisions made in batches" in q4.locator(".progress").inner_text()
    if site.url.endswith(".db"):
        owner.screenshot(path=str(DOCS / "web-owner.png"), full_page=True)
    # a self-review is refused (rita's own item, which sam reviews, may not go to her), nothing recorded
    before = head(site)
    own, u07 = 2, 9  # items are numbered by principal: user:<script>..., user:rita, user:u01, ...
    q4.get_by_label("Item numbers").fill(str(own))
    q4.get_by_label("New reviewer").fill("user:rita")
    q4.get_by_label("Reason", exact=True).first.fill("sam is away")
    q4.get_by_role("button", name="Reassign").click()
    assert "user:rita may not review item 2 of review campaign 'q4': it is about their own access" in message(owner)
    assert head(site) == before
    q4.get_by_label("Item numbers").fill(str(u07))
    q4.get_by_label("New reviewer").fill("user:sam")
    q4.get_by_label("Reason", exact=True).first.fill("rita is on leave")
    q4.get_by_role("button", name="Reassign").click()
    assert message(owner) == "Gave 1 item to the new reviewer."
    q4.get_by_label("Leave them undecided (reported as exceptions)").check()
    q4.get_by_role("button", name="Show what closing records…").click()
    assert owner.locator("#removals li").all_inner_texts() == [
        f"Remove role viewer from user:u01 in tenant prod (access review q4 item {u01}: revoke)"
    ]
    owner.get_by_role("button", name="Close the campaign and record them").click()
    assert message(owner) == "Closed the campaign and recorded 1 removal."
    assert owner.errors == []

    # the ledger holds exactly those events, by those actors
    with AccessLedger.open(site.url) as led:
        events = [ev for _, ev in led.read(site.setup_head + 1)]
    review = [ev for ev in events if ev["type"].startswith(("Review", "RoleUnassigned"))]
    kinds = [(ev["type"], ev["actor"], ev.get("item"), ev.get("decision")) for ev in review]
    assert kinds == [
        ("ReviewDecided", "user:rita", u11, "keep"),
        ("ReviewDecided", "user:rita", u01, "revoke"),
        *[("ReviewDecided", "user:rita", n, "keep") for n in batch],
        ("ReviewReassigned", "user:olivia", None, None),
        ("ReviewClosed", "user:olivia", None, None),
        ("RoleUnassigned", "user:olivia", None, None),
    ]
    assert len({ev["batch"] for ev in review[2:7]}) == 1 and "batch" not in review[0]
    assert review[7]["items"] == [u07] and review[7]["reviewer"] == "user:sam"
    assert {ev["type"] for ev in events} - {"ReviewDecided", "ReviewReassigned", "ReviewClosed", "RoleUnassigned"} <= {
        "TokenIssued",
        "TokenRevoked",
        "TokenUsed",
    }  # the attack tests' own tokens, and the service's record of each token's first use

    # `audit reviews` and the evidence bundle show them
    with AccessLedger.open(site.url) as led:
        rows = api.audit(led, "reviews")["rows"]
    done = {r["reviewer"]: r for r in rows if r["finding"] == "completion" and r["campaign"] == "q4"}
    counts = {who: (r["items"], r["decided"], r["kept"], r["revoked"]) for who, r in done.items()}
    assert counts == {"user:rita": (15, 7, 6, 1), "user:sam": (2, 0, 0, 0)}
    report = httpx.get(
        site.base + "/report", params={"period": "2026-Q4"}, cookies=_cookie(site, "auditor"), timeout=300
    )
    assert report.status_code == 200
    for shown in ("q4", "left the team", "on-call lead", "still needed", "user:sam"):
        assert shown in report.text, shown


def _cookie(site: Site, who: str) -> dict[str, str]:
    with httpx.Client(base_url=site.base) as client:
        form = client.get("/web/signin")
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        signed = client.post("/web/signin", data={"csrf": pre, "token": site.tokens[who]})
        assert signed.status_code == 303, signed.text
        return {"al_session": client.cookies["al_session"]}


def _csrf(site: Site, cookies: dict[str, str]) -> str:
    page = httpx.get(site.base + "/web/", cookies=cookies)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_a_reviewer_deciding_her_own_item_by_a_forged_form_is_refused(site):
    cookies = _cookie(site, "rita")
    before = head(site)
    r = httpx.post(
        site.base + "/web/decide",
        data={"campaign": "side", "item": "2", "decision": "keep", "reason": "mine", "csrf": _csrf(site, cookies)},
        cookies=cookies,
    )
    assert r.status_code == 409 and "it is about their own access" in r.text
    assert head(site) == before


def test_a_forged_form_without_the_csrf_token_is_refused(site):
    cookies = _cookie(site, "rita")
    before = head(site)
    for data in (
        {"campaign": "side", "item": "3", "decision": "revoke", "reason": "x"},
        {"campaign": "side", "item": "3", "decision": "revoke", "reason": "x", "csrf": "0" * 64},
    ):
        r = httpx.post(site.base + "/web/decide", data=data, cookies=cookies)
        assert r.status_code == 403 and "did not come from your session" in r.text
    assert head(site) == before


def test_a_cookie_from_another_token_is_refused(site):
    rita, mallory = _cookie(site, "rita"), _cookie(site, "mallory")
    before = head(site)
    # mallory's session with rita's form token
    r = httpx.post(
        site.base + "/web/decide",
        data={"campaign": "side", "item": "3", "decision": "revoke", "reason": "x", "csrf": _csrf(site, rita)},
        cookies=mallory,
    )
    assert r.status_code == 403
    # rita's cookie rewritten to name mallory's token keeps rita's signature: refused as not signed in
    import base64
    import json

    body, mac = rita["al_session"].split(".")
    other = json.loads(base64.urlsafe_b64decode(mallory["al_session"].split(".")[0]))
    forged = base64.urlsafe_b64encode(json.dumps(other).encode()).decode() + "." + mac
    r = httpx.get(site.base + "/web/", cookies={"al_session": forged})
    assert r.status_code == 401 and "Please sign in" in r.text and "user:mallory" not in r.text
    assert head(site) == before


def test_a_principal_named_script_is_shown_as_text(chromium, site):
    page = sign_in(chromium, site, "evil")
    assert f"Signed in as user:{EVIL}" in page.locator("header").inner_text()
    page.close()
    page = sign_in(chromium, site, "rita")
    page.get_by_label("Campaign").select_option("side")
    page.get_by_label("Person or account").fill("script")
    page.get_by_role("button", name="Show").click()
    row = page.locator("#items tbody tr").first
    assert f"user:{EVIL}" in row.inner_text() and "TICKET" not in row.inner_text()
    assert EVIL_REASON in row.inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0


def test_a_token_revoked_mid_session_is_refused_at_once(site):
    with AccessLedger.open(site.url) as led:
        made = api.create_token(led, "user:rita", ["review"], actor="system")
    site.tokens["rita-2"] = made["token"]
    cookies = _cookie(site, "rita-2")
    csrf = _csrf(site, cookies)
    with AccessLedger.open(site.url) as led:
        api.revoke_token(led, made["token_id"], actor="system")
        before = led.head()
    r = httpx.post(
        site.base + "/web/decide",
        data={"campaign": "side", "item": "3", "decision": "revoke", "reason": "x", "csrf": csrf},
        cookies=cookies,
    )
    assert r.status_code == 401 and "its token is revoked" in r.text
    assert httpx.get(site.base + "/web/", cookies=cookies).status_code == 401
    assert head(site) == before


def test_sign_in_refuses_a_token_without_the_review_scope_and_the_report_needs_audit(site):
    with httpx.Client(base_url=site.base) as client:
        pre = re.search(r'name="csrf" value="([^"]+)"', client.get("/web/signin").text).group(1)
        r = client.post("/web/signin", data={"csrf": pre, "token": site.tokens["reader"]})
        assert r.status_code == 403 and "needs the review scope" in r.text and "al_session" not in client.cookies
    r = httpx.get(site.base + "/report", params={"period": "2026-Q4"}, cookies=_cookie(site, "rita"))
    assert r.status_code == 403 and "audit scope" in r.text
    r = httpx.get(site.base + "/report", params={"period": "Q5"}, cookies=_cookie(site, "auditor"))
    assert r.status_code == 400 and "is not a period" in r.text


def test_the_readme_shows_the_screenshots_the_tests_take():
    readme = (DOCS.parent / "README.md").read_text()
    for name in ("web-reviewer.png", "web-owner.png"):
        assert (DOCS / name).is_file() and (DOCS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"docs/{name}" in readme
