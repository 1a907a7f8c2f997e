"""The web pages' routes: sign-in and out, my items, deciding, the owner's view and close, the live report.

Every page and form asks the session (session.py) and re-checks its token against the ledger's token state
folded from the chain, within the same hold of the ledger that reads or writes: a token revoked, expired or
deactivated mid-session is refused on its next request. Every POST carries the session's CSRF token.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from access_ledger.server.deps import LOG_KEY
from access_ledger.server.service import Service
from access_ledger.web import pages, reviewing
from access_ledger.web.session import COOKIE, MAX_AGE, PRE_COOKIE, Keys, Session
from ledger.app import AccessLedger
from ledger.errors import LedgerError, ReviewRefused
from projections.tokens import Token, TokenFollower, TokenRefused

SCOPES = ("review", "audit")  # who may sign in (audit: the live report)
MAX_FORM = 256 * 1024  # bytes of one form
FILTERS = ("campaign", "tenant", "principal", "q", "privileged", "undecided", "page")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
# The bundle's report is one self-contained page with inline script and style, and fetches nothing.
REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
log = logging.getLogger("access_ledger.web")
ASSETS = {"web.css": "text/css; charset=utf-8", "web.js": "text/javascript; charset=utf-8"}


class Refused(LedgerError):
    """A request the pages answer with a message and nothing recorded (a LedgerError: the service keeps its
    ledger open)."""

    def __init__(self, status: int, message: str, *, sign_in: bool = False):
        super().__init__(message)
        self.status, self.sign_in = status, sign_in


def install(app: FastAPI, keys: Keys | None = None) -> None:
    """Add the pages to the service's app."""
    web = Web(app.state.service, keys or Keys())
    app.state.web = web
    app.include_router(web.router())
    # The app's lifespan belongs to the service; the warm-up starts here and takes the ledger's lock in turn.
    threading.Thread(target=web.warm, name="web-warm", daemon=True).start()


class Web:
    def __init__(self, svc: Service, keys: Keys):
        self.svc, self.keys = svc, keys
        self._follower: TokenFollower | None = None
        self._for: AccessLedger | None = None
        self.verified = 0

    def warm(self) -> None:
        """Derive the open campaigns' items once, so that a reviewer's first page is served from memory."""
        started = time.perf_counter()
        try:
            with self.svc.ledger() as led:
                self._follow(led)
                found = reviewing.open_campaigns(led, self.verified)
                for c in found.values():
                    reviewing.items_of(led, c)
        except Exception:  # noqa: BLE001 - a failure here is met again, and reported, by the first request
            return
        log.info("web: %d open campaigns ready in %.0f ms", len(found), (time.perf_counter() - started) * 1000)

    # -- sessions ------------------------------------------------------------------------

    def _follow(self, led: AccessLedger) -> Any:
        """The token state caught up with the log (its chain recomputed on the way)."""
        if self._for is not led:  # the service reopened its ledger: follow the new one from the start
            self._follower, self._for = TokenFollower(led.store), led
        assert self._follower is not None
        state = self._follower.catch_up()
        self.verified = state.position  # the chain is checked up to here: campaigns are folded that far
        return state

    def _token(self, led: AccessLedger, s: Session) -> Token:
        """The session's token if the ledger's token state lets it be used now (Refused if not)."""
        from ledger.timeutil import format_instant, now

        state = self._follow(led)
        token = state.tokens.get(s.token_id)
        if token is None or token.issued_position != s.issued_position:
            raise Refused(401, "Your session is not valid: sign in again.", sign_in=True)
        status = state.status(token, format_instant(now()))
        if status != "active":
            raise Refused(401, f"Your session has ended: its token is {status}. Sign in again.", sign_in=True)
        if not any(x in token.scopes for x in SCOPES):
            raise Refused(403, "Your token may not use these pages (it needs the review scope).", sign_in=True)
        return token

    def _session(self, request: Request) -> Session:
        s = self.keys.read(request.cookies.get(COOKIE))
        if s is None:
            raise Refused(401, "Please sign in.", sign_in=True)
        return s

    def _csrf(self, s: Session, form: dict[str, list[str]]) -> None:
        if not self.keys.csrf_ok(s.sid, _one(form, "csrf")):
            raise Refused(403, "This form did not come from your session (or it expired): nothing was recorded.")

    # -- responses -----------------------------------------------------------------------

    def _page(self, title: str, body: str, s: Session | None, token: Token | None, message=None, status=200):
        html = pages.layout(
            title,
            body,
            who=token.principal if token else None,
            csrf=self.keys.csrf(s.sid) if s else None,
            scopes=token.scopes if token else (),
            message=message,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def _signin_page(self, message=None, status=200) -> Response:
        pre = secrets.token_urlsafe(24)
        response = self._page("Sign in", pages.signin(pre), None, None, message, status)
        response.set_cookie(PRE_COOKIE, pre, max_age=600, httponly=True, samesite="strict", path="/web/signin")
        return response

    def _refused(self, exc: Refused) -> Response:
        if exc.sign_in:
            response = self._signin_page(("error", str(exc)), exc.status)
            response.delete_cookie(COOKIE, path="/")
            return response
        return self._page(
            "Refused", '<p><a href="/web/">Back to your items</a></p>', None, None, ("error", str(exc)), exc.status
        )

    # -- the router ----------------------------------------------------------------------

    def router(self) -> APIRouter:
        r = APIRouter(include_in_schema=False)
        r.add_api_route("/web/static/{name}", self.asset, methods=["GET"])
        r.add_api_route("/web/signin", self.signin_form, methods=["GET"])
        r.add_api_route("/web/signin", self.signin, methods=["POST"])
        r.add_api_route("/web/signout", self.signout, methods=["POST"])
        r.add_api_route("/web/", self.items, methods=["GET"])
        r.add_api_route("/web/owner", self.owner, methods=["GET"])
        r.add_api_route("/web/decide", self.decide, methods=["POST"])
        r.add_api_route("/web/batch/confirm", self.batch_confirm, methods=["POST"])
        r.add_api_route("/web/batch", self.batch, methods=["POST"])
        r.add_api_route("/web/reassign", self.reassign, methods=["POST"])
        r.add_api_route("/web/close/preview", self.close_preview, methods=["POST"])
        r.add_api_route("/web/close", self.close, methods=["POST"])
        r.add_api_route("/report", self.report, methods=["GET"])
        return r

    def asset(self, name: str) -> Response:
        if name not in ASSETS:
            return Response("not found", status_code=404, media_type="text/plain")
        data = files("access_ledger.web").joinpath("static", name).read_bytes()
        return Response(data, media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"})

    def signin_form(self) -> Response:
        return self._signin_page()

    async def signin(self, request: Request) -> Response:
        form = await _form(request)
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or not secrets.compare_digest(pre, _one(form, "csrf") or ""):
            return self._signin_page(("error", "The sign-in form expired: try again."), 403)

        def check() -> Token:
            from ledger.timeutil import format_instant, now

            return self.svc.authenticate((_one(form, "token") or "").strip(), SCOPES, format_instant(now()))

        try:
            token = await run_in_threadpool(check)
        except TokenRefused as exc:
            words = {"scope": "This token may not use the review pages (it needs the review scope)."}
            return self._signin_page(("error", words.get(exc.reason, f"Not signed in: {exc}")), exc.status)
        expires = int(time.time()) + MAX_AGE
        if token.expires_at:
            from ledger.timeutil import parse_instant

            expires = min(expires, int(parse_instant(token.expires_at).timestamp()))
        s = Session(token.token_id, token.issued_position, secrets.token_urlsafe(24), expires)
        response = RedirectResponse("/web/", status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            self.keys.cookie(s),
            max_age=max(0, expires - int(time.time())),
            expires=expires,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.delete_cookie(PRE_COOKIE, path="/web/signin")
        return response

    async def signout(self, request: Request) -> Response:
        form = await _form(request)
        try:
            self._csrf(self._session(request), form)
        except Refused as exc:
            return self._refused(exc)
        response = self._signin_page(("ok", "You are signed out."))
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages ---------------------------------------------------------------------------

    def items(self, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in FILTERS}
        done = request.query_params.get("done")
        n = request.query_params.get("n", "")
        message = None
        if done in DONE and n.isdigit():
            message = ("ok", DONE[done].format(n=int(n), s="" if n == "1" else "s"))
        return self._run(request, None, lambda s, t, led: self._items(s, t, led, params, message))

    def _items(self, s, token, led, params, message=None, status=200) -> Response:
        me = token.principal
        mine: dict[str, list[dict[str, Any]]] = {}
        camps = reviewing.open_campaigns(led, self.verified)
        for name, c in camps.items():
            rows = [r for r in reviewing.items_of(led, c) if r["reviewer"] == me]
            if rows:
                mine[name] = rows
        name = params.get("campaign") if params.get("campaign") in mine else next(iter(mine), None)
        if name is None:
            body = pages.items_page(None, [], [], {}, [], 0, 1, {}, {}, "")
            return self._page("My items", body, s, token, message, status)
        c = camps[name]
        rows = mine[name]
        tenants = sorted({r["tenant"] for r in rows})
        shown = [r for r in rows if _matches(r, params, c.decisions)]
        try:
            page = max(1, min(int(params.get("page", "1")), max(1, -(-len(shown) // pages.PAGE_SIZE))))
        except ValueError:
            page = 1
        from projections.reviews import shared_membership

        everything = reviewing.items_of(led, c)
        window = shown[(page - 1) * pages.PAGE_SIZE : page * pages.PAGE_SIZE]
        together = {r["item"]: shared_membership(c, everything, r) for r in window if r["via"]}
        body = pages.items_page(
            name, list(mine), tenants, params, shown, len(rows), page, c.decisions, together, self.keys.csrf(s.sid)
        )
        return self._page("My items", body, s, token, message, status)

    def owner(self, request: Request) -> Response:
        done = request.query_params.get("done")
        n = request.query_params.get("n", "")
        message = None
        if done in DONE and n.isdigit():
            message = ("ok", DONE[done].format(n=int(n), s="" if n == "1" else "s"))
        return self._run(request, None, lambda s, t, led: self._owner(s, t, led, message))

    def _owner(self, s, token, led, message=None, status=200) -> Response:
        from ledger.timeutil import format_instant, now

        now_at = format_instant(now())
        owned = []
        for name, c in reviewing.open_campaigns(led, self.verified).items():
            if c.start["actor"] != token.principal:
                continue
            rows = reviewing.items_of(led, c)
            overdue = c.start.get("due") is not None and now_at > c.start["due"]
            per: dict[str, dict[str, Any]] = {}
            for r in rows:
                p = per.setdefault(
                    r["reviewer"],
                    {"reviewer": r["reviewer"], "items": 0, "decided": 0, "open": 0, "overdue": 0, "batch": 0},
                )
                p["items"] += 1
                d = c.decisions.get(r["item"])
                if d is None:
                    p["open"] += 1
                    p["overdue"] += int(overdue)
                else:
                    p["decided"] += 1
                    p["batch"] += int("batch" in d)
            decided = len(c.decisions)
            batched = sum(1 for d in c.decisions.values() if "batch" in d)
            owned.append(
                {
                    "name": name,
                    "per": sorted(per.values(), key=lambda p: p["reviewer"]),
                    "items": len(rows),
                    "decided": decided,
                    "due": c.start.get("due"),
                    "overdue": overdue,
                    "overdue_items": (len(rows) - decided) if overdue else 0,
                    "batch_share": f"{round(100 * batched / decided)}%" if decided else "none",
                }
            )
        # Who may be given items: the live users and service accounts, as the token state has folded them.
        assert self._follower is not None
        reviewers = sorted(p for p, active in self._follower.state.active.items() if active)[:5000]
        body = pages.owner_page(owned, reviewers, self.keys.csrf(s.sid))
        return self._page("Campaigns I run", body, s, token, message, status)

    # -- forms ---------------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            reviewing.decide(
                led,
                _one(form, "campaign") or "",
                [(_number(_one(form, "item")), _one(form, "decision") or "", _one(form, "reason"))],
                token.principal,
            )
            return _back(form, "decided", 1)

        return await run_in_threadpool(self._run, request, form, act, self._items_again(form))

    async def batch_confirm(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            name = _one(form, "campaign") or ""
            numbers = [_number(x) for x in form.get("item", [])]
            decision = _one(form, "decision") or ""
            if not numbers:
                raise ReviewRefused("select at least one item to decide them together")
            if decision not in ("keep", "revoke"):
                raise ReviewRefused("choose keep or revoke for the selected items")
            c = reviewing.find(led, name)
            rows = reviewing.items_of(led, c)
            if any(not 1 <= n <= len(rows) for n in numbers):
                raise ReviewRefused(f"not every selected item is an item of review campaign {name!r}")
            chosen = [rows[n - 1] for n in numbers]
            body = pages.batch_confirm(
                name, chosen, decision, (_one(form, "reason") or "").strip(), _clean_back(form), self.keys.csrf(s.sid)
            )
            return self._page("Confirm the batch", body, s, token)

        return await run_in_threadpool(self._run, request, form, act, self._items_again(form))

    async def batch(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            decision, reason = _one(form, "decision") or "", _one(form, "reason")
            wanted = [(_number(x), decision, reason) for x in form.get("item", [])]
            reviewing.decide(led, _one(form, "campaign") or "", wanted, token.principal)
            return _back(form, "decided", len(wanted))

        return await run_in_threadpool(self._run, request, form, act, self._items_again(form))

    async def reassign(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            text = (_one(form, "items") or "").replace(",", " ").split()
            numbers = [_number(x) for x in text]
            reviewing.reassign(
                led,
                _one(form, "campaign") or "",
                numbers,
                (_one(form, "to") or "").strip(),
                token.principal,
                _one(form, "reason"),
            )
            return RedirectResponse(f"/web/owner?done=reassigned&n={len(numbers)}", status_code=303, headers=HEADERS)

        return await run_in_threadpool(self._run, request, form, act, self._owner)

    async def close_preview(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            name, undecided = _one(form, "campaign") or "", _undecided(form)
            _, removed = reviewing.close_plan(led, name, undecided, token.principal)
            body = pages.close_confirm(
                name, undecided, (_one(form, "reason") or "").strip(), removed, self.keys.csrf(s.sid)
            )
            return self._page("Confirm the close", body, s, token)

        return await run_in_threadpool(self._run, request, form, act, self._owner)

    async def close(self, request: Request) -> Response:
        form = await _form(request)

        def act(s, token, led):
            expected = _number(_one(form, "expected"))
            reviewing.close(
                led, _one(form, "campaign") or "", _undecided(form), token.principal, _one(form, "reason"), expected
            )
            return RedirectResponse(f"/web/owner?done=closed&n={expected}", status_code=303, headers=HEADERS)

        return await run_in_threadpool(self._run, request, form, act, self._owner)

    def report(self, request: Request) -> Response:
        period = request.query_params.get("period", "")

        def act(s, token, led):
            import tempfile
            from pathlib import Path

            from ledger.timeutil import parse_period
            from reports.evidence import export_bundle

            if "audit" not in token.scopes:
                raise Refused(403, "The live report needs a token with the audit scope.")
            start, end = parse_period(period or "", "period")
            with tempfile.TemporaryDirectory() as tmp:
                result = export_bundle(led, Path(tmp) / "bundle", start=start, end=end)
                html = (result.path / "report.html").read_bytes()
            headers = {**HEADERS, "Content-Security-Policy": REPORT_CSP}
            return Response(html, media_type="text/html; charset=utf-8", headers=headers)

        return self._run(request, None, act, None)

    # -- one request ---------------------------------------------------------------------

    def _items_again(self, form: dict[str, list[str]]):
        params = dict(parse_qsl(_clean_back(form)))
        return lambda s, t, led, message, status: self._items(s, t, led, params, message, status)

    def _run(self, request: Request, form, act, again=None) -> Response:
        """Check the session (and the CSRF token of a form), then `act`; a refusal is shown on `again`'s page."""
        try:
            s = self._session(request)
            with self.svc.ledger() as led:
                token = self._token(led, s)
                request.scope.get(LOG_KEY, {})["token_id"] = token.token_id
                if form is not None:
                    self._csrf(s, form)
                try:
                    return act(s, token, led)
                except (LedgerError, ValueError) as exc:
                    if isinstance(exc, (TokenRefused, Refused)):
                        raise
                    status = 409 if isinstance(exc, ReviewRefused) else 400
                    message = ("error", f"Not recorded: {exc}")
                    if again is None:
                        return self._page("Refused", "", s, token, message, status)
                    return again(s, token, led, message, status)
        except Refused as exc:
            return self._refused(exc)


DONE = {
    "decided": "Recorded {n} decision{s}.",
    "reassigned": "Gave {n} item{s} to the new reviewer.",
    "closed": "Closed the campaign and recorded {n} removal{s}.",
}


async def _form(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of a POST, bounded in size (an oversized or undecodable form is empty)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20_000)
    except (UnicodeDecodeError, ValueError):
        return {}


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _number(text: str | None) -> int:
    if text is None or not text.strip().isdigit() or len(text.strip()) > 9:
        raise ValueError(f"{text!r} is not an item number")
    return int(text)


def _undecided(form: dict[str, list[str]]) -> str:
    value = _one(form, "undecided")
    if value not in ("revoke", "keep", "exception"):
        raise ValueError("choose what the undecided items come to")
    return value


def _clean_back(form: dict[str, list[str]]) -> str:
    """The filters a form came from, keeping only the filter names (the redirect stays on /web/)."""
    return urlencode([(k, v) for k, v in parse_qsl(_one(form, "back") or "") if k in FILTERS])


def _back(form: dict[str, list[str]], done: str, n: int) -> Response:
    query = _clean_back(form)
    return RedirectResponse(f"/web/?{query}&done={done}&n={n}", status_code=303, headers=HEADERS)


def _matches(r: dict[str, Any], params: dict[str, str], decisions: dict[int, Any]) -> bool:
    if params.get("tenant") and r["tenant"] != params["tenant"]:
        return False
    if params.get("principal") and params["principal"].lower() not in r["principal"].lower():
        return False
    if params.get("privileged") and not r["privileged"]:
        return False
    if params.get("undecided") and r["item"] in decisions:
        return False
    q = (params.get("q") or "").lower()
    if q:
        g = r.get("grant") or {}
        text = " ".join(
            str(x)
            for x in (r["principal"], r["role"], r["tenant"], r["resource"], r["via"], g.get("actor"), g.get("reason"))
        )
        return q in text.lower()
    return True
