"""One call per question and per write, shared by the two entry points: the CLI prints what a call
returns, the server sends it as JSON, so both give the same answers and the same refusals (a
LedgerError whose message both show). Every answer names the position and chain link it was computed at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerError, ValidationError
from ledger.events import load_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.app import AccessLedger, WriteResult
    from projections.permissions import PermissionState

QUESTION_FIELDS = frozenset({"principal", "action", "resource", "tenant", "at", "position"})
EVENTS_LIMIT = 10_000  # events one read of the log returns at most


# -- where an answer stands --------------------------------------------------------------------


def link_at(led: AccessLedger, position: int) -> str:
    """The chain link after the event at `position` (the genesis link at 0)."""
    from ledger.store import GENESIS_LINK

    head, _, head_link = led.store.head()  # checked against the head event's bytes
    if position == head:
        return head_link
    if position <= 0:
        return GENESIS_LINK
    with led.store.transaction(write=False) as c:  # al_chain: covered by verify, link by link
        c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
        row = c.fetchone()
    if row is None or not isinstance(row[0], str):
        raise LedgerError(f"the log has no chain link at position {position}: run `access-ledger verify`")
    return row[0]


def state_at(
    led: AccessLedger, at: str | None, position: int | None, principal: str | None = None
) -> tuple[PermissionState, str]:
    """The state a question is asked of and the instant it is asked at (only `principal`'s part, when given)."""
    from ledger.timeutil import cli_instant, format_instant, now
    from projections.pit import Timeline

    if at is not None and position is not None:
        raise ValidationError("give --at or --position, not both")
    timeline = Timeline(led)
    if position is not None:
        if position < 0 or position > led.head():
            raise ValidationError(f"position: {position} is outside the log (1-{led.head()})")
        state = timeline.for_principal(principal, position) if principal else timeline.at_position(position)
        return state, state.at or format_instant(now())
    if at is not None:
        instant = cli_instant(at, "at")
        target = led.position_at(instant)
        return (timeline.for_principal(principal, target) if principal else timeline.at_position(target)), instant
    return timeline.current(), format_instant(now())


def require_recorded(
    led: AccessLedger, principal: str | None, tenant: str | None, resource: str | None, cursor: Any = None
) -> None:
    """Refuse a principal, a tenant, or a connector (`service_connector/ID` in a tenant) never recorded."""
    from ledger.names import require_recorded as require

    rtype, _, rid = (resource or "").partition("/")
    connector = rid if rtype == "service_connector" and tenant is not None else None
    require(led.store, principal=principal, tenant=tenant, connector=connector, cursor=cursor)


# -- the questions -----------------------------------------------------------------------------


def check(
    led: AccessLedger,
    principal: str,
    action: str,
    resource: str,
    tenant: str | None = None,
    at: str | None = None,
    position: int | None = None,
) -> dict[str, Any]:
    """May `principal` do `action` on `resource`? With every path that allows it, or why not (also `explain`)."""
    from projections.answers import Question
    from projections.answers import check as ask

    require_recorded(led, principal, tenant, resource)
    state, instant = state_at(led, at, position, principal)
    answer = ask(state, Question(principal, action, resource, tenant), instant)
    answer["link"] = link_at(led, answer["position"])
    return answer


def who_can(
    led: AccessLedger,
    action: str,
    resource: str,
    tenant: str | None = None,
    at: str | None = None,
    position: int | None = None,
) -> dict[str, Any]:
    """Every user and service account allowed `action` on `resource`, one row per path: {at, position, link, rows}."""
    from projections.answers import who_can as ask

    require_recorded(led, None, tenant, resource)
    state, instant = state_at(led, at, position)
    rows = ask(state, action, resource, tenant, instant)
    return {"at": instant, "position": state.position, "link": link_at(led, state.position), "rows": rows}


def what_can(
    led: AccessLedger, principal: str, tenant: str | None = None, at: str | None = None, position: int | None = None
) -> dict[str, Any]:
    """Every permission `principal` holds: {at, position, link, rows}."""
    from projections.answers import what_can as ask

    require_recorded(led, principal, tenant, None)
    state, instant = state_at(led, at, position, principal)
    rows = ask(state, principal, tenant, instant)
    return {"at": instant, "position": state.position, "link": link_at(led, state.position), "rows": rows}


def question(q: Any, n: int) -> dict[str, Any]:
    """One question of a batch (a JSON object; `n` its line or item number), checked; ValidationError naming n."""
    from ledger.timeutil import canonical

    if not isinstance(q, dict):
        raise ValidationError(f"line {n}: line is not a JSON object")
    q = dict(q)
    unknown = set(q) - QUESTION_FIELDS
    if unknown:
        raise ValidationError(f"line {n}: {sorted(unknown)[0]}: unknown field")
    for key in ("principal", "action", "resource"):
        if not isinstance(q.get(key), str):
            raise ValidationError(f"line {n}: {key}: required text field is missing")
    if q.get("tenant") is not None and not isinstance(q["tenant"], str):
        raise ValidationError(f"line {n}: tenant: must be a text (a tenant's name)")
    if "at" in q and "position" in q:
        raise ValidationError(f"line {n}: give at or position, not both")
    if "at" in q:
        try:
            q["_instant"] = canonical(q["at"])
        except ValidationError as exc:
            raise ValidationError(f"line {n}: {exc}") from None
    if "position" in q and (type(q["position"]) is not int or q["position"] < 0):  # true is no position
        raise ValidationError(f"line {n}: position: must be a whole number >= 0")
    q["_line"] = n
    return q


def parse_questions(data: bytes) -> list[dict[str, Any]]:
    """The questions of a JSONL batch (`check --batch`), each checked; the first bad line is refused."""
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise ValidationError(f"line {line_no}: line is not valid UTF-8") from None
    queries: list[dict[str, Any]] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            # A key given twice is refused (json.loads would keep the last one), and so is
            # nesting too deep for the parser.
            q = load_json(line)
        except ValidationError as exc:
            raise type(exc)(f"line {n}: {exc}") from None
        queries.append(question(q, n))
    return queries


def check_batch(led: AccessLedger, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer checked questions in one sweep: each the question as asked, `allowed`, and the position answered at."""
    from ledger.timeutil import format_instant, now
    from projections.answers import Question, allowed
    from projections.pit import Timeline

    _require_recorded_names(led, queries)
    head = led.head()
    instant = format_instant(now())  # the questions about now are asked at one instant
    for q in queries:
        if "_instant" in q:
            q["_position"] = min(led.position_at(q["_instant"]), head)  # (a write since `head`: answered at it)
        elif "position" in q:
            q["_position"] = min(q["position"], head)
            q["_instant"] = led.time_of(q["_position"]) or instant
        else:
            q["_position"], q["_instant"] = head, instant

    def answer(state: PermissionState, q: dict[str, Any]) -> bool:
        try:
            return allowed(state, Question(q["principal"], q["action"], q["resource"], q.get("tenant")), q["_instant"])
        except ValidationError as exc:
            raise ValidationError(f"line {q['_line']}: {exc}") from None

    # Questions about the head are answered from the current state (a worker's cached one); the rest in
    # one forward sweep from the nearest checkpoint.
    timeline = Timeline(led)
    past = [q for q in queries if q["_position"] < head]
    results = iter(timeline.sweep(past, lambda q: q["_position"], answer))
    if len(past) < len(queries):
        state = timeline.current()
        results = iter([next(results) if q["_position"] < head else answer(state, q) for q in queries])
    return [
        {**{k: v for k, v in q.items() if not k.startswith("_")}, "allowed": allowed, "_position": q["_position"]}
        for q, allowed in zip(queries, results)
    ]


def _require_recorded_names(led: AccessLedger, queries: list[dict[str, Any]]) -> None:
    """Refuse a batch naming a principal, tenant or connector never recorded (the first such line)."""
    from ledger.names import question_keys, recorded_among

    asked = []
    for q in queries:
        connector = q["resource"] if q["resource"].startswith("service_connector/") else None
        for names in ((q["principal"], None, None), (None, q.get("tenant"), connector)):
            rtype, _, rid = (names[2] or "").partition("/")
            asked.append((q, names, question_keys(names[0], names[1], rid if rtype and names[1] is not None else None)))
    seen: set[tuple[str | None, ...]] = set()
    with led.store.transaction(write=False) as c:  # one read for every look-up
        # Every name in a few statements; a question whose names are not all found is looked up on its own, which
        # refuses it with the closest names (or lets it pass: an empty ledger).
        found = recorded_among(c, (key for _, _, keys in asked if keys is not None for key in keys))
        for q, names, keys in asked:
            if names in seen or (keys is not None and found.issuperset(keys)):
                continue
            seen.add(names)
            try:
                require_recorded(led, *names, cursor=c)
            except LedgerError as exc:
                raise type(exc)(f"line {q['_line']}: {exc}") from None


# -- the log -----------------------------------------------------------------------------------


def event_lines(body: bytes) -> list[bytes]:
    """The events of a request body as JSONL lines: one JSON object, a JSON array of them, or JSONL."""
    import orjson

    text = body.strip()
    if text[:1] in (b"{", b"["):
        try:
            whole = load_json(text)
        except ValidationError:
            whole = None  # JSONL (or bad JSON: its line says so below)
        if isinstance(whole, dict):
            return [text]
        if isinstance(whole, list):
            # Item N is "line N" in every message; each item must be an object (a line of JSONL).
            return [_line_of(item, orjson) if isinstance(item, dict) else b"[]" for item in whole]
    return body.split(b"\n")


def _line_of(item: dict, orjson: Any) -> bytes:
    """One array item as a JSONL line (json for what orjson cannot write: an integer beyond 64 bits, a lone surrogate;
    the import then refuses it with its own message)."""
    try:
        return orjson.dumps(item)
    except TypeError:
        import json

        return json.dumps(item).encode()  # ASCII: a lone surrogate stays an escape, as a JSONL body has it


def import_events(led: AccessLedger, body: bytes) -> WriteResult:
    """Record the events of `body` (see event_lines) as `import` does: all or none, idempotent by id."""
    return led.import_lines(event_lines(body))


def read_events(led: AccessLedger, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    """The events after position `after`, at most `limit`: {position, link, events: [{position, event}]}."""
    from ledger.events import decode

    if after < 0:
        raise ValidationError("after: must be a whole number >= 0")
    if not 1 <= limit <= EVENTS_LIMIT:
        raise ValidationError(f"limit: must be between 1 and {EVENTS_LIMIT}")
    head, _, head_link = led.store.head()
    stop = min(head, after + limit)
    events = (
        [{"position": p, "event": decode(state)} for p, state in led.store.read(after + 1, stop)]
        if stop > after
        else []
    )
    return {"position": head, "link": head_link, "events": events}


# -- tokens ------------------------------------------------------------------------------------


def create_token(
    led: AccessLedger,
    principal: str,
    scopes: list[str],
    expires_at: str | None = None,
    *,
    actor: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Issue a token: {token (to show once, never stored), token_id, position}."""
    from ledger.tokens import new_token

    token, token_id, digest = new_token()
    event: dict[str, Any] = {
        "type": "TokenIssued",
        "at": None,
        "actor": actor,
        "token_id": token_id,
        "principal": principal,
        "scopes": list(scopes),
        "secret_sha256": digest,
    }
    if expires_at is not None:
        event["expires_at"] = expires_at
    if reason:
        event["reason"] = reason
    position = led.append(event)
    return {"token": token, "token_id": token_id, "position": position}


def revoke_token(led: AccessLedger, token_id: str, *, actor: str, reason: str | None = None) -> int:
    """Revoke a token; return the position of TokenRevoked."""
    event: dict[str, Any] = {"type": "TokenRevoked", "at": None, "actor": actor, "token_id": token_id}
    if reason:
        event["reason"] = reason
    return led.append(event)


def list_tokens(led: AccessLedger) -> dict[str, Any]:
    """Every token ever issued with its status now: {at, position, link, rows}."""
    from ledger.timeutil import format_instant, now
    from projections.tokens import TokenFollower, token_rows

    state = TokenFollower(led.store).catch_up()
    instant = format_instant(now())
    return {"at": instant, "position": state.position, "link": state.link, "rows": token_rows(state, instant)}


# -- changes between two instants, and the audits ----------------------------------------------


def diff(led: AccessLedger, start: str, end: str | None = None) -> dict[str, Any]:
    """Permissions gained and lost between two instants (as people type them; `end` default now), with the
    events behind each: {from, to, position, link, rows}; position and link are the later instant's."""
    from ledger.timeutil import cli_instant, format_instant, now
    from projections.answers import diff as compare
    from projections.pit import Timeline

    t1 = cli_instant(start, "from")
    t2 = cli_instant(end, "to") if end is not None else format_instant(now())
    if t2 < t1:
        raise ValidationError("to: must not be before --from")
    timeline = Timeline(led)
    p1, p2 = led.position_at(t1), led.position_at(t2)
    events = list(led.read_changes(p1 + 1, p2)) if p2 > p1 else []
    rows = compare(timeline.at_position(p1), timeline.at_position(p2), t1, t2, events)
    return {"from": t1, "to": t2, "position": p2, "link": link_at(led, p2), "rows": rows}


#: The parameters each audit takes, as the CLI names them (`from`/`to` are start/end here).
# Every audit takes --principal and --tenant (its rows' `who` and `where`); --connector and --role where its rows
# name one.
_FILTERS = frozenset({"principal", "tenant"})
AUDIT_OPTIONS: dict[str, frozenset[str]] = {
    "review": frozenset({"at", "role"}) | _FILTERS,
    "least-privilege": frozenset({"at", "window", "role"}) | _FILTERS,
    "secrets": frozenset({"start", "end", "period", "connector", "role"}) | _FILTERS,
    "sod": frozenset({"at", "rules"}) | _FILTERS,
    "changes": frozenset({"start", "end", "period"}) | _FILTERS,
    "hygiene": frozenset({"at", "start", "end", "period"}) | _FILTERS,
    "reviews": frozenset({"at", "start", "end", "period"}) | _FILTERS,
    "authority": frozenset({"start", "end", "period", "authority_rules"}) | _FILTERS,
}
_OPTION_NAMES = {"start": "from", "end": "to", "authority_rules": "rules"}


def require_filters(led: AccessLedger, connector: str | None, tenant: str | None, role: str | None) -> None:
    """Refuse a --connector or --role the ledger never recorded (a typo would filter every row away)."""
    from ledger.names import require_recorded as require

    require(led.store, role=role, connector=connector, tenant=tenant)


def audit(
    led: AccessLedger, name: str, warehouse: Any = None, *, sync: Any = None, note: Any = None, **options: Any
) -> dict[str, Any]:
    """Run audit `name` with the CLI's options (None where not given) on the synced warehouse: {audit, title,
    description, params, position, link, columns, rows, result (the AuditResult)}. `sync(wh)` brings the
    warehouse up to date (default wh.sync()); `note(text)` hears why a warehouse is synced afresh."""
    from ledger.timeutil import cli_instant, parse_period
    from reports.audits import audit_params, run_audit
    from reports.errors import UnknownAudit
    from reports.warehouse import Warehouse

    if name not in AUDIT_OPTIONS:
        raise UnknownAudit(f"no audit named {name!r} (choose from {', '.join(AUDIT_OPTIONS)}, or leavers with the CLI)")
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - AUDIT_OPTIONS[name])
    if extra:
        takes = ", ".join(sorted(_OPTION_NAMES.get(k, k) for k in AUDIT_OPTIONS[name]))
        raise ValidationError(
            f"{_OPTION_NAMES.get(extra[0], extra[0])}: audit {name} takes no such parameter (it takes {takes})"
        )
    params = dict(given)
    if "at" in params:
        params["at"] = cli_instant(params["at"], "at")
    if "period" in params:
        if "start" in params or "end" in params:
            raise ValidationError("period: give --period or --from/--to, not both")
        params["start"], params["end"] = parse_period(params.pop("period"))
    else:
        for key in ("start", "end"):
            if key in params:
                params[key] = cli_instant(params[key], _OPTION_NAMES[key])
    # Bad arguments are refused before a possibly long sync.
    audit_params(
        name, **{k: v for k, v in params.items() if k not in ("rules", "authority_rules", "connector", "role")}
    )
    if name == "sod":
        from reports.sod import load_rules

        load_rules(params.get("rules"))
    elif name == "authority":
        from reports.authority import check_rules_file

        check_rules_file(params.get("authority_rules"))
    require_recorded(led, params.get("principal"), params.get("tenant"), None)
    require_filters(led, params.get("connector"), params.get("tenant"), params.get("role"))
    wh = Warehouse.open(led, warehouse)
    try:
        if wh.rebuilt and note is not None:
            note(f"the warehouse {wh.path} is synced afresh: {wh.rebuilt}")
        (sync or Warehouse.sync)(wh)
        result = run_audit(wh, name, sync=False, **params)
        position = wh.position
    finally:
        wh.close()
    return {
        "audit": result.name,
        "title": result.title,
        "description": result.description,
        "params": result.params,
        "position": position,
        "link": link_at(led, position),
        "columns": result.columns,
        "rows": result.rows,
        "triaged": triaged_rows(result),
        "result": result,
    }


def triaged_rows(result: Any) -> list[dict[str, Any]]:
    """The audit's findings accepted or suppressed at its instant, as plain rows (none when there are none)."""
    from reports.findings import plain

    if result.triaged is None:
        return []
    return [{k: plain(v) for k, v in r.items()} for r in result.triaged.to_pylist()]


# -- changes made with a token (the service's `change` scope) ------------------------------------

CHANGE_LIMIT = 10_000  # changes one request may make


class ActorNamed(ValidationError):
    """A change that names its own actor or time, where the token's principal and the service's clock decide."""


def make_changes(led: AccessLedger, changes: Any, *, actor: str) -> WriteResult:
    """Record changes (one JSON object or a list of them, each an event of DESIGN section 4 without `actor` and
    `at`) as made by `actor` now, all or none, each held to the authority rules whatever the ledger enforces.
    A change naming an actor or a time is refused (ActorNamed), never rewritten."""
    from ledger.app import WriteResult

    chunk, skipped = change_events(changes, actor=actor, made_already=lambda change: made_already(led, change))
    if not chunk:
        return WriteResult(0, skipped, None, None)
    result = led.write_chunk(chunk, enforce_authority=True)
    return WriteResult(result.written, result.skipped + skipped, result.first, result.last, result.head)


def change_events(
    changes: Any, *, actor: str, made_already: Callable[[dict[str, Any]], bool]
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The changes of a request (see make_changes) as a write takes them, (line number or 0, event), and how
    many of them `made_already` says are recorded (a retry by id)."""
    from ledger.app import stamped_chunk
    from ledger.authority import CHANGE_TYPES
    from ledger.events import parse_obj
    from ledger.timeutil import format_instant, now

    stamp = format_instant(now())

    many = isinstance(changes, list)
    items = changes if many else [changes]
    if not items:
        raise ValidationError("no changes given")
    if len(items) > CHANGE_LIMIT:
        raise ValidationError(f"at most {CHANGE_LIMIT} changes a request")
    events, lines = [], []
    for n, change in enumerate(items, 1):
        where = f"line {n}: " if many else ""
        if not isinstance(change, dict):
            raise ValidationError(f"{where}line is not a JSON object")
        for field in ("actor", "at"):
            if field in change:
                raise ActorNamed(
                    f"{where}{field}: a change is made by the token's principal ({actor}), now: "
                    f"the request may not name its {'actor' if field == 'actor' else 'time'}"
                )
        kind = change.get("type")
        if kind not in CHANGE_TYPES:
            raise ValidationError(
                f"{where}type: {repr(kind)[:80]} is not a change (one of {', '.join(CHANGE_TYPES)}); "
                "platform facts go to POST /v1/events, review steps to /v1/reviews, tokens to /v1/tokens"
            )
        event = {**change, "actor": actor}
        try:
            canonical = parse_obj({**event, "at": stamp})  # its fields checked here, so a refusal names its line
        except ValidationError as exc:
            raise type(exc)(f"{where}{exc}") from None
        if "id" in canonical and made_already(canonical):
            continue
        events.append(event)
        lines.append(n)
    return stamped_chunk(events, lines if many else None), len(items) - len(events)


def made_already(led: AccessLedger, change: dict[str, Any]) -> bool:
    """True if the change's id is recorded with this very change (its time aside: a retry is stamped anew).
    The id index only points: the event read at that position must carry the id (the chain covers its bytes)."""
    from ledger.events import decode

    with led.store.transaction(write=False) as c:
        c.execute("SELECT position FROM al_ids WHERE event_id = ?", (change["id"],))
        row = c.fetchone()
    if row is None:
        return False
    recorded = [decode(state) for _, state in led.store.read(int(row[0]), int(row[0]))]
    if not recorded or recorded[0].get("id") != change["id"]:
        return False  # a stale or edited index: the write's own id check decides
    return {k: v for k, v in recorded[0].items() if k != "at"} == {k: v for k, v in change.items() if k != "at"}


# -- access reviews (the CLI's review commands, the service's review endpoints, the reviewers' pages) --

#: What `review_close` does with items nobody decided (None: refuse to close while any is open).
UNDECIDED_OUTCOMES = ("revoke", "keep", "exception")
REVIEW_BATCH_BYTES = 64 * 1024 * 1024  # a batch of decisions, as a file or a request body


def review_start(
    led: AccessLedger,
    name: str,
    tenants: list[str],
    reviewer: str,
    reviewer_for: list[str] | None = None,
    fallback_reviewer: str | None = None,
    privileged_only: bool = False,
    due: str | None = None,
    at: str | None = None,
    *,
    actor: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Start a campaign (times as people type them): {campaign, position, items, population_sha256}."""
    from ledger.timeutil import cli_instant
    from projections.reviews import start_event

    for pair in reviewer_for or []:
        if not pair.startswith("team:") or "=" not in pair:
            raise ValidationError(f"--reviewer-for: {pair!r} is not team:NAME=PRINCIPAL")
    at = None if at is None else cli_instant(at, "at")
    due = None if due is None else cli_instant(due, "due")
    event, items = start_event(
        led,
        name,
        list(tenants),
        reviewer,
        list(reviewer_for or []),
        fallback_reviewer,
        privileged_only,
        due,
        at,
        actor,
        reason,
    )
    position = led.append(event)
    return {
        "campaign": name,
        "position": position,
        "items": len(items),
        "population_sha256": event["population_sha256"],
    }


def review_rows(led: AccessLedger, name: str, *, context: bool = False) -> tuple[Any, list[dict[str, Any]], int]:
    """The campaign, its items as rows (the population re-derived and checked against its start event; with
    `context` each item's permissions, last use and separation-of-duties conflicts too) and the position read."""
    from projections.pit import Timeline
    from projections.reviews import campaign, derive, item_rows
    from reports.sod import load_rules

    c = campaign(led, name)
    timeline = Timeline(led)
    rules = [(rule.id, rule.left, rule.right) for rule in load_rules(None)[0]] if context else []
    current = timeline.current()
    return c, item_rows(c, derive(led, c, timeline, context=context, sod_rules=rules), current), current.position


def review_items(
    led: AccessLedger, name: str, *, reviewer: str | None = None, open_only: bool = False, context: bool = True
) -> dict[str, Any]:
    """The campaign's items (only `reviewer`'s, only undecided ones): {campaign, position, link, rows}."""
    _, rows, position = review_rows(led, name, context=context)
    if reviewer is not None:
        rows = [r for r in rows if r["reviewer"] == reviewer]
    if open_only:
        rows = [r for r in rows if r["decision"] is None]
    return {"campaign": name, "position": position, "link": link_at(led, position), "rows": rows}


def item_number(text: Any, campaign: str) -> int:
    """An item's number as given (text or a whole number), or the refusal naming the campaign."""
    if type(text) is int and text >= 0:
        return text
    if not isinstance(text, str) or not text.strip().isdigit():
        raise ValidationError(f"item {text!r} is not an item of review campaign {campaign!r} (items are numbers)")
    return int(text)


def review_reassign(
    led: AccessLedger, name: str, items: list[int], to: str, *, actor: str, reason: str | None = None
) -> dict[str, Any]:
    """Give undecided items to another reviewer (the owner only): {campaign, position, items, reviewer}."""
    from projections.reviews import campaign, derive, reassign_event

    c = campaign(led, name)
    position = led.append(reassign_event(c, derive(led, c), list(items), to, actor, reason))
    return {"campaign": name, "position": position, "items": list(items), "reviewer": to}


def parse_review_batch(data: bytes, name: str, source: str) -> list[tuple[int, int, str, str | None]]:
    """(line number, item, decision, reason) of each decided row of a CSV batch (`source` names it in messages).

    The text is either rows of item,decision[,reason] (an optional header of those three), or a sheet whose
    header names the columns `item` and `decision` (and maybe `reason`) among others, as `review items
    --format csv` writes it: its other columns are ignored and a row with no decision is left undecided.
    A UTF-8 BOM and CRLF line ends (as spreadsheets save) are accepted; decisions in any case.
    """
    import csv
    import io

    if len(data) > REVIEW_BATCH_BYTES:
        raise ValidationError(f"{source}: larger than {REVIEW_BATCH_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{source}: not UTF-8 text") from None
    out = []
    columns: dict[str, int] | None = None  # the sheet's columns, once its header is read
    seen_first = False
    for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if not seen_first:
            seen_first = True
            header = [c.strip().lower() for c in row]
            if "item" in header:
                wanted = ("item", "decision", "reason")
                for col in wanted:
                    if header.count(col) > 1:
                        raise ValidationError(f"line {n}: the column {col} is given twice")
                if "decision" not in header:
                    raise ValidationError(f"line {n}: a sheet needs the columns item and decision")
                columns = {col: header.index(col) for col in wanted if col in header}
                continue
        if columns is None:
            if len(row) not in (2, 3):
                raise ValidationError(f"line {n}: expected item,decision,reason")
            cells = {"item": row[0], "decision": row[1], "reason": row[2] if len(row) == 3 else ""}
        else:
            cells = {col: (row[i] if i < len(row) else "") for col, i in columns.items()}
            if not cells["decision"].strip():
                continue  # a row of the sheet the reviewer did not decide
        decision = cells["decision"].strip().lower()
        if decision not in ("keep", "revoke"):
            raise ValidationError(f"line {n}: decision {cells['decision'].strip()!r} is not keep or revoke")
        try:
            item = item_number(cells["item"], name)
        except ValidationError as exc:
            raise ValidationError(f"line {n}: {exc}") from None
        out.append((n, item, decision, cells.get("reason", "").strip() or None))
    return out


def review_decide(
    led: AccessLedger,
    name: str,
    decisions: list[tuple[int, int, str, str | None]],
    *,
    actor: str,
    batch_sha256: str | None = None,
    source: str = "batch",
) -> dict[str, Any]:
    """Record `actor`'s decisions ((line, item, keep|revoke, reason) each), all or none: {campaign, written,
    first, last}. With `batch_sha256` they are one batch (one id, the SHA-256 of what was sent) and each
    refusal names its line; without it there must be exactly one decision."""
    import uuid

    from projections.reviews import campaign, decision_event, derive

    batch = batch_sha256 is not None
    if not batch and len(decisions) != 1:
        raise ValidationError("one decision at a time, or a batch")
    batch_id = uuid.uuid4().hex if batch else None  # one id for the batch's decisions, recorded together
    c = campaign(led, name)
    population = derive(led, c)
    events = []
    seen: set[int] = set()
    for n, number, what, why in decisions:
        try:
            if what not in ("keep", "revoke"):
                raise ValidationError(f"decision {what!r} is not keep or revoke")
            if number in seen:
                raise ValidationError(f"item {number} is given twice")
            seen.add(number)
            events.append(decision_event(c, population, number, what, why, actor))
            if batch:
                events[-1].update(batch=batch_id, batch_sha256=batch_sha256)
            c.decisions[number] = events[-1]  # the batch's later rows see it (one membership, one outcome)
        except LedgerError as exc:
            if not batch:
                raise
            raise type(exc)(f"line {n}: {exc}") from None
    if not events:
        raise ValidationError(f"{source}: no decisions in the file")
    result = led.append_many(events)
    return {"campaign": name, "written": result.written, "first": result.first, "last": result.last}


def review_close(
    led: AccessLedger,
    name: str,
    undecided: str | None = None,
    *,
    auto_revoke: bool = True,
    actor: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Close the campaign (its owner, or a holder of member:update in the organization); `undecided` (revoke,
    keep or exception) says what open items come to. Its revocations are recorded in the same transaction
    unless not `auto_revoke`: {campaign, position, removed: [{position, event}]}."""
    from ledger.errors import ReviewRefused
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline
    from projections.reviews import campaign, close_refusal, derive, removals

    if undecided is not None and undecided not in UNDECIDED_OUTCOMES:
        raise ValidationError(f"undecided: {undecided!r} is not one of {', '.join(UNDECIDED_OUTCOMES)}")
    c = campaign(led, name)
    if c.close is not None:
        raise ReviewRefused(f"review campaign {name!r} is already closed")
    timeline = Timeline(led)
    current = timeline.current()
    refusal = close_refusal(c, current, actor, max(format_instant(now()), led.newest_at() or ""))
    if refusal:
        raise ReviewRefused(refusal)
    open_items = c.start["items"] - len(c.decisions)
    if open_items and undecided is None:
        raise ReviewRefused(
            f"review campaign {name!r} has {open_items} undecided "
            f"item{'s' if open_items != 1 else ''}: close with --revoke-undecided, "
            "--keep-undecided or --leave-exceptions"
        )
    outcome = undecided or "exception"
    population = derive(led, c, timeline)
    close_event: dict[str, Any] = {
        "type": "ReviewClosed",
        "at": None,
        "actor": actor,
        "campaign": name,
        "undecided": outcome,
        "auto_revoke": auto_revoke,
    }
    if reason:
        close_event["reason"] = reason
    removed = removals(c, population, outcome, current, actor) if auto_revoke else []
    result = led.append_many([close_event, *removed])
    return {
        "campaign": name,
        "position": result.first,
        "removed": [{"position": result.first + n, "event": ev} for n, ev in enumerate(removed, 1)],
    }


def _review_summary(c: Any, rows: list[dict[str, Any]], now_at: str) -> dict[str, Any]:
    decided = sum(1 for r in rows if r["decision"] is not None)
    overdue = c.close is None and c.start.get("due") is not None and now_at > c.start["due"]
    return {
        "campaign": c.name,
        "status": "closed" if c.close else ("overdue" if overdue else "open"),
        "tenants": ",".join(c.start["tenants"]),
        "started_at": c.start["at"],
        "as_of_position": c.start["as_of_position"],
        "due": c.start.get("due"),
        "items": len(rows),
        "decided": decided,
        "kept": sum(1 for r in rows if r["decision"] == "keep"),
        "revoked": sum(1 for r in rows if r["decision"] == "revoke"),
        "exceptions": sum(1 for r in rows if r["outcome"] == "exception"),
        "revocations_open": sum(1 for r in rows if r["outcome"] == "revoke" and not r["removed"]),
        "closed_at": c.close["at"] if c.close else None,
        "population_sha256": c.start["population_sha256"],
    }


def review_status(led: AccessLedger, name: str) -> dict[str, Any]:
    """Progress per reviewer: {campaign, summary, position, link, rows (items, decided, open, overdue, ...)}."""
    from ledger.timeutil import format_instant, now

    c, rows, position = review_rows(led, name)
    now_at = format_instant(now())
    overdue = c.close is None and c.start.get("due") is not None and now_at > c.start["due"]
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        p = per.setdefault(
            r["reviewer"],
            {
                "reviewer": r["reviewer"],
                "items": 0,
                "decided": 0,
                "open": 0,
                "kept": 0,
                "revoked": 0,
                "overdue": 0,
                "exceptions": 0,
                "revocations_open": 0,
            },
        )
        p["items"] += 1
        if r["decision"] is None:
            p["open"] += 1
            p["overdue"] += int(overdue)
        else:
            p["decided"] += 1
            p["kept" if r["decision"] == "keep" else "revoked"] += 1
        p["exceptions"] += int(r["outcome"] == "exception")
        p["revocations_open"] += int(r["outcome"] == "revoke" and not r["removed"])
    return {
        "campaign": name,
        "summary": _review_summary(c, rows, now_at),
        "position": position,
        "link": link_at(led, position),
        "rows": sorted(per.values(), key=lambda p: p["reviewer"]),
    }


def review_list(led: AccessLedger) -> dict[str, Any]:
    """Every campaign with its scope, status and progress: {position, link, rows}."""
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline
    from projections.reviews import campaigns, derive, item_rows

    timeline = Timeline(led)
    current = timeline.current()
    now_at = format_instant(now())
    rows = [
        _review_summary(c, item_rows(c, derive(led, c, timeline), current), now_at) for c in campaigns(led).values()
    ]
    return {"position": current.position, "link": link_at(led, current.position), "rows": rows}


# -- tables (the CLI's table, CSV and markdown, and the service's CSV) -----------------------------

WHO_CAN_COLUMNS = (
    "principal",
    "role",
    "via_team",
    "permission",
    "resource_scope",
    "expires_at",
    "granted_at",
    "granted_by",
    "position",
    "reason",
)
WHAT_CAN_COLUMNS = (
    "tenant",
    "permission",
    "resource_scope",
    "role",
    "via_team",
    "from_role",
    "expires_at",
    "granted_at",
    "granted_by",
    "position",
    "reason",
)
DIFF_COLUMNS = ("principal", "change", "tenant", "permission", "resource_scope", "events")


def diff_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """diff's rows with their causes in one cell each ("#POSITION EVENT AT by ACTOR (REASON); ...")."""
    return [
        {
            **{k: r[k] for k in DIFF_COLUMNS[:-1]},
            "events": "; ".join(
                f"#{c['position'] or '-'} {c['event']} {c['at']} by {c['actor']}"
                + (f" ({c['reason']})" if c["reason"] else "")
                for c in r["causes"]
            ),
        }
        for r in rows
    ]


# -- CSV -----------------------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """A value as one CSV cell's text: lists joined with ", ", yes/no, JSON for a mapping, "" for none."""
    import json

    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(csv_cell(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def csv_text(rows: Any, columns: Any) -> str:
    """Rows (dicts) as CSV with a header, every cell formula-safe (a spreadsheet opens it as text)."""
    import csv
    import io

    from ledger.private import csv_safe

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_safe(c) for c in columns])
    for row in rows:
        writer.writerow([csv_safe(csv_cell(row.get(c))) for c in columns])
    return buf.getvalue()
