"""The evidence bundle's access reviews (#18): for every campaign of the period, its population and its record.

    reviews/NAME.population.jsonl  the population exactly as hashed into the ReviewStarted event (one compact
                                   JSON array of projections.reviews.FACTS per item): `sha256sum` of the file
                                   is the event's population_sha256
    reviews/NAME.json              scope, progress, and per item: reviewer, decision (time, position, reason),
                                   outcome at close, the removal event that carried a revoke out and the
                                   time to revoke; the exceptions

A campaign is in the period when it started at or before the period's last position and was not
closed before its first. What it records is as of the period's end: decisions, close and removals
after it are not in the bundle. The population is re-derived from the ledger and checked against
the start event (projections.reviews.derive), never read from anywhere else; NAME is the campaign's
name when that is a plain file name, else a hashed stem (check_bundle.review_stems).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

from ledger.errors import LedgerError
from ledger.private import write_private
from reports.check_bundle import POPULATION, REVIEWS, review_stems

if TYPE_CHECKING:
    from ledger.app import AccessLedger
    from projections.reviews import Campaign

_REVIEW = b'{"type":"Review'


class _Removals:
    """The events that give or take away access (projections.reviews ACCESS_EVENTS), by access_key:
    (position, event) lists in position order. A tenant's deletion is not among them: the checkers take
    a remediation to be a removal of the access itself (check_bundle._REMOVALS)."""

    HEADS = {
        b'{"type":"%s"' % t.encode(): t
        for t in ("RoleAssigned", "RoleUnassigned", "TeamMemberAdded", "TeamMemberRemoved", "TeamDeleted")
    }

    def __init__(self) -> None:
        self.raw: list[tuple[int, bytes]] = []  # decoded on first use: none at all when no campaign is exported
        self._by: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] | None = None

    def take(self, pos: int, raw: bytes) -> None:
        if raw[: raw.find(b'"', 9) + 1] in self.HEADS:
            self.raw.append((pos, raw))

    @property
    def by(self) -> dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]]:
        from ledger.events import decode
        from projections.reviews import access_key

        if self._by is None:
            self._by = {}
            for pos, raw in self.raw:
                ev = decode(raw)
                self._by.setdefault(access_key(ev), []).append((pos, ev))
        return self._by

    def carrying(self, r: dict[str, Any], start: int, revoked: int) -> tuple[int, dict[str, Any]] | None:
        """The removal that carried out the item's revoke recorded at `revoked` (projections.reviews
        carrying_removal): none before it of access given back before it."""
        from projections.reviews import carrying_removal

        return carrying_removal(r, start, revoked, lambda key: self.by.get(key, []))


@dataclass
class _Events:
    """The review events up to the period's end, read like a ledger by projections.reviews.campaigns."""

    events: list[tuple[int, dict[str, Any]]]

    def read_changes(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(self.events)


def write_reviews(led: AccessLedger, folder: Path, first: int, last: int) -> list[dict[str, Any]]:
    """Write reviews/ for the campaigns of positions first..last; return their records (as in NAME.json),
    in start order (none: no folder)."""
    from ledger.events import decode
    from projections.pit import Timeline
    from projections.reviews import campaigns
    from reports.verified_log import VerifiedLog

    reviews: list[tuple[int, dict[str, Any]]] = []
    removals = _Removals()
    for pos, raw in led.read_changes_raw(1, last):
        if raw.startswith(_REVIEW):
            reviews.append((pos, decode(raw)))
        else:
            removals.take(pos, raw)
    found = campaigns(cast("AccessLedger", _Events(reviews)))
    chosen = [c for c in found.values() if c.start_position <= last and (c.close_position or last) >= first]
    if not chosen:
        return []
    (folder / "reviews").mkdir(exist_ok=True)
    folded: dict[str, int] = {}
    for name in found:
        folded[name.casefold()] = folded.get(name.casefold(), 0) + 1
    # The verified log of an evidence export keeps no checkpoints (it has no ledger to store them in).
    timeline = Timeline(led, persist=not isinstance(led, VerifiedLog))
    records = []
    for c in chosen:
        plain, hashed = review_stems(c.name)
        # Two names equal but for case would be one file on a case-insensitive file system: both hashed.
        stem = plain if folded[c.name.casefold()] == 1 else hashed
        records.append(_write_campaign(led, c, stem, timeline, removals, folder))
    return records


def _write_campaign(
    led: AccessLedger, c: Campaign, stem: str, timeline: Any, removals: _Removals, folder: Path
) -> dict[str, Any]:
    from projections.reviews import FACTS, derive

    s = c.start
    population_file = f"{REVIEWS}{stem}{POPULATION}"
    record: dict[str, Any] = {
        "campaign": c.name,
        "file": f"{REVIEWS}{stem}.json",
        "scope": {
            "tenants": s["tenants"],
            "privileged_only": s.get("privileged_only", False),
            "reviewer": s["reviewer"],
            "reviewers": s.get("reviewers", []),
            "fallback_reviewer": s.get("fallback_reviewer"),
            "due": s.get("due"),
        },
        "owner": s["actor"],
        "started_at": s["at"],
        "start_position": c.start_position,
        "as_of_position": s["as_of_position"],
        "reason": s.get("reason"),
        "population": {"items": s["items"], "sha256": s["population_sha256"], "file": population_file},
        "closed": None
        if c.close is None
        else {
            "position": c.close_position,
            "at": c.close["at"],
            "actor": c.close["actor"],
            "undecided": c.close["undecided"],
            "auto_revoke": c.close["auto_revoke"],
        },
    }
    try:
        items = derive(led, c, timeline)
        data = b"".join(orjson.dumps([r[f] for f in FACTS]) + b"\n" for r in items)
        if hashlib.sha256(data).hexdigest() != s["population_sha256"]:
            raise LedgerError(f"review campaign {c.name!r}: the population file does not hash to its start event")
    except LedgerError as exc:
        # A ledger exported with --allow-tampered: the record says why there is no population file.
        record.update(error=str(exc), progress=None, reviewers={}, items=[], exceptions=[])
        _write_json(folder / record["file"], record)
        return record
    write_private(folder / population_file, data)
    rows = [_item(c, r, removals) for r in items]
    record["progress"] = _progress(rows)
    record["reviewers"] = _per_reviewer(rows)
    record["items"] = rows
    record["exceptions"] = [
        {
            "item": r["item"],
            "principal": r["principal"],
            "role": r["role"],
            "tenant": r["tenant"],
            "exception": r["exception"],
        }
        for r in rows
        if r["exception"]
    ]
    _write_json(folder / record["file"], record)
    return record


def _item(c: Campaign, r: dict[str, Any], removals: _Removals) -> dict[str, Any]:
    """One item's row: population facts, decision, outcome at close, remediation and exception."""
    from ledger.timeutil import parse_instant

    d = c.decisions.get(r["item"])
    if c.close is not None:
        outcome = d["decision"] if d else c.close["undecided"]
    else:
        outcome = "open"
    # The revoke is the decision, or the close for an item left undecided; what carries it out is a removal after
    # it (by close, or later by hand), or the one before it when the access was gone by then.
    revoking = outcome == "revoke" or (d is not None and d["decision"] == "revoke")
    revoked = c.decided_at[r["item"]] if d is not None else c.close_position
    removal = removals.carrying(r, c.start["as_of_position"], revoked) if revoking and revoked is not None else None
    decided_at = d["at"] if d else (c.close["at"] if c.close is not None and outcome == "revoke" else None)
    seconds = None
    if removal is not None and decided_at is not None:
        seconds = max(0, round((parse_instant(removal[1]["at"]) - parse_instant(decided_at)).total_seconds()))
    exception = None
    if outcome == "exception":
        exception = "undecided at close: left as an exception"
    elif outcome == "revoke" and removal is None:
        due = c.start.get("due")
        exception = "revocation not carried out" + (f" (due {due})" if due else "")
    return {
        "item": r["item"],
        "principal": r["principal"],
        "principal_kind": r["principal_kind"],
        "role": r["role"],
        "tenant": r["tenant"],
        "resource": r["resource"],
        "via": r["via"],
        "expires_at": r["expires_at"],
        "privileged": r["privileged"],
        "deactivated": r["deactivated"],
        "reviewer": r["reviewer"],
        "decision": d["decision"] if d else None,
        "decided_by": d["actor"] if d else None,
        "decided_at": d["at"] if d else None,
        "decision_position": c.decided_at.get(r["item"]),
        "reason": d.get("reason") if d else None,
        "outcome": outcome,
        "remediation": None
        if removal is None
        else {
            "position": removal[0],
            "type": removal[1]["type"],
            "at": removal[1]["at"],
            "reason": removal[1].get("reason"),
        },
        "time_to_revoke_seconds": seconds,
        "exception": exception,
    }


def _progress(rows: list[dict[str, Any]]) -> dict[str, int]:
    decided = [r for r in rows if r["decision"]]
    return {
        "items": len(rows),
        "decided": len(decided),
        "undecided": len(rows) - len(decided),
        "kept": sum(r["decision"] == "keep" for r in rows),
        "revoked": sum(r["outcome"] == "revoke" for r in rows),
        "carried_out": sum(r["remediation"] is not None for r in rows if r["outcome"] == "revoke"),
        "exceptions": sum(r["exception"] is not None for r in rows),
    }


def _per_reviewer(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        entry = out.setdefault(r["reviewer"], {"items": 0, "decided": 0})
        entry["items"] += 1
        entry["decided"] += r["decision"] is not None
    return dict(sorted(out.items()))


def _write_json(path: Path, record: dict[str, Any]) -> None:
    write_private(path, orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
