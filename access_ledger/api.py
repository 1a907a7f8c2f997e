"""One call per question and per write, shared by the two entry points: the CLI prints what a call
returns, the server sends it as JSON, so both give the same answers and the same refusals (a
LedgerError whose message both show). Every answer names the position and chain link it was computed at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerError, ValidationError
from ledger.events import load_json

if TYPE_CHECKING:
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


def require_recorded(led: AccessLedger, principal: str | None, tenant: str | None, resource: str | None) -> None:
    """Refuse a principal, a tenant, or a connector (`service_connector/ID` in a tenant) never recorded."""
    from ledger.names import require_recorded as require

    rtype, _, rid = (resource or "").partition("/")
    connector = rid if rtype == "service_connector" and tenant is not None else None
    require(led.store, principal=principal, tenant=tenant, connector=connector)


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
    from projections.answers import Question
    from projections.answers import check as ask
    from projections.pit import Timeline

    _require_recorded_names(led, queries)
    head = led.head()
    for q in queries:
        if "_instant" in q:
            q["_position"] = led.position_at(q["_instant"])
        elif "position" in q:
            q["_position"] = min(q["position"], head)
            q["_instant"] = led.time_of(q["_position"]) or format_instant(now())
        else:
            q["_position"], q["_instant"] = head, format_instant(now())

    def answer(state: PermissionState, q: dict[str, Any]) -> bool:
        try:
            result = ask(state, Question(q["principal"], q["action"], q["resource"], q.get("tenant")), q["_instant"])
        except ValidationError as exc:
            raise ValidationError(f"line {q['_line']}: {exc}") from None
        return bool(result["allowed"])

    results = Timeline(led).sweep(queries, lambda q: q["_position"], answer)
    return [
        {**{k: v for k, v in q.items() if not k.startswith("_")}, "allowed": allowed, "_position": q["_position"]}
        for q, allowed in zip(queries, results)
    ]


def _require_recorded_names(led: AccessLedger, queries: list[dict[str, Any]]) -> None:
    """Refuse a batch naming a principal, tenant or connector never recorded (each looked up once)."""
    seen: set[tuple[str | None, ...]] = set()
    for q in queries:
        connector = q["resource"] if q["resource"].startswith("service_connector/") else None
        for names in ((q["principal"], None, None), (None, q.get("tenant"), connector)):
            if names in seen:
                continue
            seen.add(names)
            try:
                require_recorded(led, *names)
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
AUDIT_OPTIONS: dict[str, frozenset[str]] = {
    "review": frozenset({"at", "principal", "tenant"}),
    "least-privilege": frozenset({"at", "window"}),
    "secrets": frozenset({"start", "end", "period"}),
    "sod": frozenset({"at", "rules"}),
    "changes": frozenset({"start", "end", "period"}),
    "hygiene": frozenset({"at", "start", "end", "period"}),
    "reviews": frozenset({"at", "start", "end", "period"}),
    "authority": frozenset({"start", "end", "period", "authority_rules"}),
}
_OPTION_NAMES = {"start": "from", "end": "to", "authority_rules": "rules"}


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
    audit_params(name, **{k: v for k, v in params.items() if k not in ("rules", "authority_rules")})
    if name == "sod":
        from reports.sod import load_rules

        load_rules(params.get("rules"))
    elif name == "authority":
        from reports.authority import check_rules_file

        check_rules_file(params.get("authority_rules"))
    require_recorded(led, params.get("principal"), params.get("tenant"), None)
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
        "result": result,
    }


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
