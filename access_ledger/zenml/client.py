"""A small client of a ZenML server's REST API (0.98): login, and the access-relevant resources, paged.

Everything read here is untrusted input from the network: sizes are bounded, every field is checked
for its type before use, and a response that is not what the API documents ends in one ZenMLError line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ledger.errors import LedgerError

#: The ZenML versions whose REST models this client was written and tested against.
KNOWN_VERSIONS = ("0.98.",)
PAGE_SIZE = 1000
TIMEOUT = 30.0
MAX_PAGES = 10_000


class ZenMLError(LedgerError):
    """The ZenML server could not be read as a ZenML 0.98 server (one line says why)."""


class ServerUnreachable(ZenMLError):
    """No ZenML server answered at the URL."""


class LoginRefused(ZenMLError):
    """The server refused the username and password."""


class NotAdmin(ZenMLError):
    """The login is not an admin's: it cannot see every user."""


class UnknownApiVersion(ZenMLError):
    """The server runs a ZenML version whose API this client does not know."""


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    kind: str  # user | service_account
    active: bool
    is_admin: bool
    created: str
    updated: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    active: bool
    created: str
    updated: str
    last_login: str | None
    last_rotated: str | None


@dataclass(frozen=True, slots=True)
class Connector:
    id: str
    name: str
    owner_id: str | None
    connector_type: str | None
    auth_method: str | None
    resource_types: tuple[str, ...]
    expires_at: str | None
    labels: tuple[str, ...]
    created: str
    updated: str


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created: str


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ZenMLError(f"the server's answer is not ZenML's: {what} is not text")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ZenMLError(f"the server's answer is not ZenML's: {what} is not true or false")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ZenMLError(f"the server's answer is not ZenML's: {what} is not an object")
    return value


class ZenMLClient:
    """A logged-in session with one ZenML server."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT):
        import httpx

        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ZenMLError(f"--url: {url!r} is not an http:// or https:// URL")
        self._http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout, follow_redirects=False)
        self.version: str | None = None
        #: The server's clock (its HTTP Date header) as its latest answer gave it; None if it sent none.
        self.date: datetime | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZenMLClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServerUnreachable(f"the ZenML server at {self.url} did not answer within {TIMEOUT:.0f} s") from None
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"no ZenML server answers at {self.url} ({type(exc).__name__})") from None
        if response.status_code == 404:
            raise UnknownApiVersion(
                f"{self.url} has no {path} in its API: not a ZenML server, or one whose API this client does not know"
            )
        self.date = _http_date(response.headers.get("date"))
        if response.status_code >= 400:
            return response
        try:
            return response.json()
        except ValueError:
            raise ZenMLError(f"{self.url}{path}: the answer is not JSON: not a ZenML server?") from None

    def login(self, username: str, password: str) -> None:
        """Check the server's version, log in, and make sure the login sees every user (an admin's)."""
        info = self._request("GET", "/info")
        if not isinstance(info, dict):
            raise ZenMLError(f"{self.url}: /info answered {info.status_code}: not a ZenML server?")
        version = _str(info.get("version"), "info.version")
        if not version.startswith(KNOWN_VERSIONS):
            known = ", ".join(v + "x" for v in KNOWN_VERSIONS)
            raise UnknownApiVersion(
                f"the ZenML server at {self.url} runs version {version[:40]!r}; this client knows {known}"
            )
        self.version = version
        answer = self._request("POST", "/login", data={"username": username, "password": password})
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise LoginRefused(f"the ZenML server at {self.url} refused the login of {username!r} (wrong password?)")
        self._http.headers["Authorization"] = f"Bearer {answer['access_token']}"
        me = self._request("GET", "/current-user")
        if not isinstance(me, dict):
            raise ZenMLError(f"{self.url}: /current-user answered {me.status_code}")
        body = _dict(me.get("body"), "current-user.body")
        if body.get("is_service_account") is True or body.get("is_admin") is not True:
            raise NotAdmin(
                f"{username!r} is not an admin of the ZenML server at {self.url}: it cannot see every user "
                "(log in as an admin)"
            )

    def total(self, path: str, params: dict[str, Any] | None = None) -> int:
        """How many items a list holds now (one item is sent, the server counts them)."""
        answer = self._request("GET", path, params={**(params or {}), "page": 1, "size": 1})
        if not isinstance(answer, dict):
            raise ZenMLError(f"{self.url}{path}: the server answered {answer.status_code}")
        total = answer.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ZenMLError(f"the server's answer is not ZenML's: {path} has no total")
        return total

    def _all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        items: list[dict[str, Any]] = []
        page = 1
        while page <= MAX_PAGES:
            answer = self._request("GET", path, params={**(params or {}), "page": page, "size": PAGE_SIZE})
            if not isinstance(answer, dict):
                raise ZenMLError(f"{self.url}{path}: the server answered {answer.status_code}")
            got = answer.get("items")
            if not isinstance(got, list):
                raise ZenMLError(f"the server's answer is not ZenML's: {path} has no items")
            items += [_dict(i, f"{path} item") for i in got]
            total_pages = answer.get("total_pages")
            if not isinstance(total_pages, int) or page >= total_pages:
                return items
            page += 1
        raise ZenMLError(f"{self.url}{path}: more than {MAX_PAGES} pages")

    def users(self, since: str | None = None) -> list[Account]:
        """Every item of /users (updated at or after `since`, a ZenML filter time, if given)."""
        return [_account(u, "user") for u in self._all("/users", _since(since))]

    def service_accounts(self, since: str | None = None) -> list[Account]:
        return [_account(a, "service_account") for a in self._all("/service_accounts", _since(since))]

    def api_keys(self, service_account_id: str) -> list[ApiKey]:
        # Hydrated: last_login and last_rotated are metadata. A key's secret is never in a listing.
        return [_api_key(k) for k in self._all(f"/service_accounts/{service_account_id}/api_keys", {"hydrate": "true"})]

    def connectors(self, since: str | None = None) -> list[Connector]:
        # Hydrated for the labels; expand_secrets=false, or the server would send every secret value.
        params = {"hydrate": "true", "expand_secrets": "false", **_since(since)}
        return [_connector(c) for c in self._all("/service_connectors", params)]

    def projects(self, since: str | None = None) -> list[Project]:
        out = []
        for p in self._all("/projects", _since(since)):
            body = _dict(p.get("body"), "project.body")
            out.append(
                Project(
                    _str(p.get("id"), "project.id"),
                    _str(p.get("name"), "project.name"),
                    _str(body.get("created"), "project.created"),
                )
            )
        return out


#: ZenML's filter format for times (its FILTERING_DATETIME_FORMAT: whole seconds, UTC).
FILTER_TIME = "%Y-%m-%d %H:%M:%S"


def _since(since: str | None) -> dict[str, str]:
    return {} if since is None else {"updated": f"gte:{since}"}


def _http_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = parsedate_to_datetime(text[:64])
        value = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # A date the ledger could not subtract a margin from is no clock: read everything every pass.
    return value if value.year >= 2000 else None


def _account(item: dict[str, Any], kind: str) -> Account:
    body = _dict(item.get("body"), f"{kind}.body")
    if body.get("is_service_account") is True:
        kind = "service_account"  # listed by /service_accounts too
    return Account(
        id=_str(item.get("id"), f"{kind}.id"),
        name=_str(item.get("name"), f"{kind}.name"),
        kind=kind,
        active=_bool(body.get("active"), f"{kind}.active"),
        is_admin=body.get("is_admin") is True,
        created=_str(body.get("created"), f"{kind}.created"),
        updated=_str(body.get("updated"), f"{kind}.updated"),
    )


def _api_key(item: dict[str, Any]) -> ApiKey:
    body = _dict(item.get("body"), "api_key.body")
    meta = _dict(item.get("metadata"), "api_key.metadata")
    return ApiKey(
        id=_str(item.get("id"), "api_key.id"),
        name=_str(item.get("name"), "api_key.name"),
        active=_bool(body.get("active"), "api_key.active"),
        created=_str(body.get("created"), "api_key.created"),
        updated=_str(body.get("updated"), "api_key.updated"),
        last_login=_opt_str(meta.get("last_login"), "api_key.last_login"),
        last_rotated=_opt_str(meta.get("last_rotated"), "api_key.last_rotated"),
    )


def _connector(item: dict[str, Any]) -> Connector:
    body = _dict(item.get("body"), "connector.body")
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}

    ctype = body.get("connector_type")
    if isinstance(ctype, dict):
        ctype = ctype.get("connector_type")
    rtypes = body.get("resource_types", [])
    labels = meta.get("labels") or {}
    if not isinstance(rtypes, list) or not isinstance(labels, dict):
        raise ZenMLError("the server's answer is not ZenML's: connector resource_types or labels malformed")
    return Connector(
        id=_str(item.get("id"), "connector.id"),
        name=_str(item.get("name"), "connector.name"),
        owner_id=_opt_str(body.get("user_id"), "connector.user_id"),
        connector_type=_opt_str(ctype, "connector.connector_type"),
        auth_method=_opt_str(body.get("auth_method"), "connector.auth_method"),
        resource_types=tuple(sorted(_str(r, "connector.resource_types") for r in rtypes)),
        expires_at=_opt_str(body.get("expires_at"), "connector.expires_at"),
        labels=tuple(sorted(f"{_str(k, 'label')}={v}" for k, v in labels.items())),
        created=_str(body.get("created"), "connector.created"),
        updated=_str(body.get("updated"), "connector.updated"),
    )
