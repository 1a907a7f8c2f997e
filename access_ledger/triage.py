"""The lifecycle of audit findings (issue 29): list them with their state, accept, suppress, reopen.

One function per command, shared by the CLI and the service. A decision names a finding the audits
report at the moment it is made (its id is recomputed from the audit's rows: an unknown id is refused
with the closest ones); the ledger checks that the id matches the parts recorded with it and refuses a
decision about the actor's own finding, or one the actor's own change caused; every decision is held
to the authority rules (member:update in the organization on zenml-pro), whether or not the ledger
enforces them for other changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

from ledger.errors import UnknownEntity, ValidationError

if TYPE_CHECKING:
    from ledger.app import AccessLedger

#: The audits a finding id can come from without more input (leavers needs an HR file).
TRIAGE_AUDITS = ("least-privilege", "secrets", "sod", "hygiene", "reviews", "authority")
STATES = ("open", "accepted", "suppressed", "all")
#: The order a finding id is looked for in: hygiene first (the usual triage), the slower audits last.
SEARCH_ORDER = ("hygiene", "authority", "sod", "reviews", "secrets", "least-privilege")


def findings(
    led: AccessLedger, *, at: str | None = None, audits: tuple[str, ...] = TRIAGE_AUDITS
) -> list[dict[str, Any]]:
    """Every finding of these audits at `at` (default now), open or triaged: id, audit, kind, principal, scope,
    cause, state, by whom, when, why, until when, and the rule that suppresses it if one does."""
    with closing(_each(led, at, audits)) as rows:
        return [row for _, row in rows]


def _each(led: AccessLedger, at: str | None, audits: tuple[str, ...] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(audit, finding) of the audits, one audit at a time on one synced warehouse, so a caller may stop early.
    `audits` None: those some accept, suppress or rule decision names (only they can hold triaged findings)."""
    from reports import audits as reports_audits
    from reports.findings import TRIAGE_COLUMNS, id_parts, kind_of, plain
    from reports.warehouse import Warehouse

    wh = Warehouse.open(led, None)
    try:
        wh.sync()
        if audits is None:
            named = wh.con.execute(
                "SELECT DISTINCT audit FROM events WHERE type IN "
                "('FindingAccepted', 'FindingSuppressed', 'SuppressionRuleAdded')"
            ).fetchall()
            wh.confirm()  # the file proven to be the one the ledger recorded before its answer is used
            audits = tuple(a for a in TRIAGE_AUDITS if (a,) in named)
        for name in audits:
            result = reports_audits.run_audit(wh, name, at=at, sync=False)
            tables = [(result.table, False)] + ([(result.triaged, True)] if result.triaged is not None else [])
            for table, triaged in tables:
                if "finding_id" not in table.column_names:
                    continue
                for row in table.to_pylist():
                    if row["finding_id"] is None:
                        continue
                    row = {k: plain(v) for k, v in row.items()}
                    _, kind, principal, scope, cause = id_parts(name, row)
                    item = {
                        "finding_id": row["finding_id"],
                        "audit": name,
                        "kind": kind_of(row),
                        "principal": principal,
                        "scope": scope,
                        "what": row.get("what"),
                        "cause": cause,
                        "state": row["finding_state"] if triaged else "open",
                    }
                    for c in TRIAGE_COLUMNS[1:]:
                        item[c] = row.get(c) if triaged else None
                    yield name, item
    finally:
        wh.close()


def list_findings(
    led: AccessLedger, *, state: str = "open", audit: str | None = None, at: str | None = None
) -> list[dict[str, Any]]:
    """The findings in one state (or all), of one audit or every one, at `at` (default now)."""
    if state not in STATES:
        raise ValidationError(f"state: {state!r} is not one of {', '.join(STATES)}")
    if audit is not None and audit not in TRIAGE_AUDITS:
        raise ValidationError(f"audit: {audit!r} has no findings to list (choose from {', '.join(TRIAGE_AUDITS)})")
    # Accepted and suppressed findings can only be in an audit some decision names: the others are not run.
    wanted: tuple[str, ...] | None = (audit,) if audit else (TRIAGE_AUDITS if state in ("open", "all") else None)
    with closing(_each(led, at, wanted)) as each:
        rows = [row for _, row in each]
    return [r for r in rows if state == "all" or r["state"] == state]


def _find(led: AccessLedger, fid: str, audit: str | None = None) -> dict[str, Any]:
    """The finding the audits report now with this id: the audits run one at a time, cheapest and likeliest
    first, until one yields it (all of them only for an id none reports, to name the closest)."""
    from ledger.findings import FINDING_ID

    if not FINDING_ID.fullmatch(fid):
        raise ValidationError(f"finding: {fid[:80]!r} is not a finding id (F- and 16 hex digits)")
    known: list[str] = []
    with closing(_each(led, None, (audit,) if audit else SEARCH_ORDER)) as each:
        for _, f in each:
            if f["finding_id"] == fid:
                return f
            known.append(f["finding_id"])
    close = difflib.get_close_matches(fid, known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else " (`finding list --state all` lists them)"
    raise UnknownEntity(f"finding: no audit reports a finding {fid} now{hint}")


def decide(
    led: AccessLedger,
    fid: str,
    *,
    accept: bool,
    reason: str | None,
    until: str | None = None,
    actor: str,
    at: str | None = None,
    audit: str | None = None,
) -> dict[str, Any]:
    """Accept (or suppress) one finding the audits report now (of `audit` when the caller knows it); returns
    the event's position and the finding."""
    verb = "accept" if accept else "suppress"
    if not reason:
        raise ValidationError(f"reason: give --reason: why the finding is {verb}ed")
    finding = _find(led, fid, audit)
    event = {
        "type": "FindingAccepted" if accept else "FindingSuppressed",
        "at": at,
        "actor": actor,
        "finding": fid,
        "audit": finding["audit"],
        "kind": finding["kind"],
        "principal": finding["principal"],
        "scope": finding["scope"],
        "cause": finding["cause"],
        "until": until,
        "reason": reason,
    }
    return {"position": _write(led, event), "finding": finding}


def add_rule(
    led: AccessLedger,
    rule: str,
    *,
    principal: str,
    tenant: str | None = None,
    reason: str | None,
    until: str | None = None,
    actor: str,
    at: str | None = None,
) -> dict[str, Any]:
    """Suppress every finding of one kind (`AUDIT/KIND`) about one principal (in one tenant, or anywhere)."""
    from ledger.findings import rule_id
    from reports.findings import ATTENTION

    audit, sep, kind = rule.partition("/")
    if not sep or not kind:
        raise ValidationError(f"rule: {rule[:80]!r} is not AUDIT/KIND (for example hygiene/self-grant)")
    if audit not in ATTENTION or ATTENTION[audit] == frozenset():
        choose = ", ".join(a for a, k in ATTENTION.items() if k != frozenset())
        raise ValidationError(f"rule: {audit!r} is not an audit with findings (choose from {choose})")
    kinds = ATTENTION[audit]
    if kinds is not None and kind not in kinds:
        close = difflib.get_close_matches(kind, sorted(kinds), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"choose from {', '.join(sorted(kinds))}"
        raise ValidationError(f"rule: audit {audit} has no finding {kind!r} ({hint})")
    if not reason:
        raise ValidationError("reason: give --reason: why these findings are suppressed")
    rid = rule_id(audit, kind, principal, tenant)
    event = {
        "type": "SuppressionRuleAdded",
        "at": at,
        "actor": actor,
        "rule": rid,
        "audit": audit,
        "kind": kind,
        "principal": principal,
        "tenant": tenant,
        "until": until,
        "reason": reason,
    }
    return {"position": _write(led, event), "rule": rid}


def reopen(led: AccessLedger, ref: str, *, reason: str | None, actor: str, at: str | None = None) -> dict[str, Any]:
    """Open again a finding (F-...) or a suppression rule (R-...) that a decision took out of the audits."""
    from ledger.findings import FINDING_ID, RULE_ID

    if not reason:
        raise ValidationError("reason: give --reason: why it is reopened")
    if FINDING_ID.fullmatch(ref):
        field = "finding"
    elif RULE_ID.fullmatch(ref):
        field = "rule"
    else:
        raise ValidationError(f"{ref[:80]!r} is neither a finding id (F-...) nor a suppression rule id (R-...)")
    event = {"type": "FindingReopened", "at": at, "actor": actor, field: ref, "reason": reason}
    return {"position": _write(led, event)}


def _write(led: AccessLedger, event: dict[str, Any]) -> int:
    event = {k: v for k, v in event.items() if v is not None}
    # Triage is always held to the authority rules: who may take a finding off the auditor's list matters
    # even on a ledger that only reports other unauthorised changes.
    result = led.append_many([event], enforce_authority=True)
    assert result.last is not None
    return result.last
