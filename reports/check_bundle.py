#!/usr/bin/env python3
"""Check an access-ledger evidence bundle without access-ledger: Python's standard library only (and, for a
signature, the `cryptography` package or the `openssl` command).

    python3 -I check_bundle.py [BUNDLE] [--public-key signing.pub] [--digest digest.json] [--after PREVIOUS]

BUNDLE is the bundle folder or zip (default: the folder this file is in). It re-hashes every file
listed in manifest.json, recomputes the hash chain over events/events.jsonl from the manifest's
start link, naming the first event that does not match events/chain.jsonl, and compares the end
link with the manifest's. --public-key: manifest.json must carry a valid Ed25519 signature by that
key (it covers the end link). --digest: a digest of the ledger (access-ledger digest) at a position
inside the bundle must name the link recomputed there. --after: the bundle must start exactly where the
bundle PREVIOUS (itself checked) ended. These verdicts are the ones `evidence verify` gives: it runs the same
functions (digest_problems, continuity_problems). Each population file of an access review,
reviews/NAME.population.jsonl, must have the line count and SHA-256 that its campaign's ReviewStarted
event among the events records. A bundle's filters (manifest "filters") must be the ones each audit records in
the manifest and in its audits/NAME.json, and an HR file's SHA-256 (manifest "hr") the one of its copy hr/hr.csv,
which the leavers audit names; the verdict repeats both in `scope:` lines. Exit 0: all checked; 1: a problem,
named; 2: a usage error (an unknown option, an anchor file that cannot be read).

The chain: link(p) = SHA-256 of "PREV\\nP\\nORIGINATOR\\nVERSION\\nTOPIC\\n" followed by the event's line
(without its newline), where PREV is link(p - 1) in hex. Line i of events/chain.jsonl belongs to line i
of events/events.jsonl (position first_position + i - 1) and is a JSON array: [first 16 hex digits of
the link] for a usage event (originator: usage_stream_prefix then the position as 16 hex digits;
version 1), or [link16, originator, version], or [link16, originator, version, topic] when the topic
is not topic_prefix followed by the event's "type".

This file is also the access-ledger module reports/check_bundle.py: `evidence verify` runs this code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path, PurePosixPath
from typing import IO, Any

MANIFEST = "manifest.json"
FORMAT = "access-ledger-evidence/1"
#: manifest.json is read to at most this (a few hundred kB even for a 10M-event year), as by `evidence verify`.
MANIFEST_LIMIT = 16 << 20
CHUNK = 1 << 20
EVENTS = "events/events.jsonl"
CHAIN = "events/chain.jsonl"
SIGNATURE_KEY = "signature_ed25519"
GENESIS = "0" * 64
LINK_CHARS = 16
REVIEWS = "reviews/"
POPULATION = ".population.jsonl"
#: The only names a file under reviews/ may have: a campaign's population and its record.
REVIEW_FILE = re.compile(r"reviews/([A-Za-z0-9][A-Za-z0-9_~-]{0,99})(\.population\.jsonl|\.json)\Z")
_PLAIN_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}\Z")
_REVIEW_STARTED = b'{"type":"ReviewStarted"'
_REVIEW_DECIDED = b'{"type":"ReviewDecided"'
#: The events that can carry a review's revocation out: each named by a record must take away exactly that
#: item's grant (check_record compares its position, type, time and what it removes with the item).
_REMOVALS = tuple(b'{"type":"%s"' % t for t in (b"RoleUnassigned", b"TeamMemberRemoved", b"TeamDeleted"))
#: The population facts (projections.reviews.FACTS, in this order) a record's item must repeat.
_ITEM_FACTS = ("item", "principal", "role", "tenant", "resource", "via")
#: A campaign's record (reviews/NAME.json) is read whole: larger than this is refused.
MAX_REVIEW_RECORD = 1 << 30

Opener = Callable[[str], IO[bytes]]
#: What reading a hostile bundle may raise: each is a named problem, never a traceback.
UNREADABLE = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    """What the manifest's Ed25519 signature covers: the manifest without its signatures, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k not in ("signature", SIGNATURE_KEY)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def link(prev: str, position: int, originator: str, version: int, topic: str, state: bytes) -> str:
    return hashlib.sha256(
        b"%s\n%d\n%s\n%d\n%s\n%s" % (prev.encode(), position, originator.encode(), version, topic.encode(), state)
    ).hexdigest()


def _type_of(state: bytes) -> str | None:
    if state.startswith(b'{"type":"'):
        end = state.find(b'"', 9)
        return state[9:end].decode("utf-8", "replace") if end > 0 else None
    try:
        value = json.loads(state)
    except ValueError:
        return None
    return value.get("type") if isinstance(value, dict) and isinstance(value.get("type"), str) else None


class Chain:
    """The outcome of recomputing a bundle's chain: `links` holds the link at each position asked for
    (and at first - 1); `problem` and `first_bad` name the first failure."""

    def __init__(self) -> None:
        self.links: dict[int, str] = {}
        self.end_link = ""
        self.problem: str | None = None
        self.first_bad: int | None = None
        # campaign: (position, items, population SHA-256) of each ReviewStarted event among the events
        self.review_starts: dict[str, tuple[int, int, str]] = {}
        # position: (campaign, item, decision, actor, at, reason) of each ReviewDecided event
        self.decisions: dict[int, tuple[Any, ...]] = {}
        # position: (type, at, what it removes) of each event that can carry a revocation out
        self.removals: dict[int, tuple[str, str, tuple[Any, ...]]] = {}
        self.first = self.last = 0
        self.last_at: str | None = None  # the time of the last event, if any


def recompute(manifest: dict[str, Any], open_member: Opener, want: tuple[int, ...] = ()) -> Chain:
    """Recompute the chain over the bundle's events from the manifest's start link."""
    out = Chain()
    meta = manifest.get("chain")
    if not isinstance(meta, dict):
        out.problem = "the manifest carries no chain (a bundle from an earlier version): its events cannot be checked"
        return out
    try:
        first, last = int(meta["first_position"]), int(meta["last_position"])
        prefix, usage = str(meta["topic_prefix"]), str(meta["usage_stream_prefix"])
        current = str(meta["start_link"])
    except (KeyError, TypeError, ValueError):
        out.problem = "the manifest's chain entry is incomplete"
        return out
    wanted = set(want)
    out.links[first - 1] = current
    position = first - 1
    state = None
    with open_member(EVENTS) as events, open_member(CHAIN) as chain:
        for state, entry in zip_longest(_lines(events), _lines(chain)):
            position += 1
            if state is None or entry is None or position > last:
                return _bad(
                    out,
                    position,
                    f"{EVENTS} and {CHAIN} do not hold the {last - first + 1:,} events of "
                    f"positions {first:,} to {last:,}: line {position - first + 1} is "
                    "missing from one of them or added",
                )
            try:
                item = json.loads(entry)
                short = item[0]
                if len(item) == 1:
                    originator, version = f"{usage}{position:016x}", 1
                else:
                    originator, version = str(item[1]), int(item[2])
                topic = str(item[3]) if len(item) > 3 else prefix + (_type_of(state) or "")
            except (ValueError, TypeError, IndexError, KeyError):
                return _bad(out, position, f"line {position - first + 1} of {CHAIN} is not a chain entry")
            current = link(current, position, originator, version, topic, state)
            if current[:LINK_CHARS] != short:
                return _bad(
                    out,
                    position,
                    f"the event at position {position} (line {position - first + 1} of "
                    f"{EVENTS}) does not match its chain link: changed, inserted, removed "
                    "or reordered",
                )
            if position in wanted:
                out.links[position] = current
            if state.startswith(_REVIEW_STARTED):
                _take_start(out, position, state)
            elif state.startswith(_REVIEW_DECIDED) or state.startswith(_REMOVALS):
                _take_review_event(out, position, state)
    if position != last:
        return _bad(
            out, position + 1, f"{EVENTS} ends at position {position:,}, the period at {last:,} (events removed)"
        )
    out.end_link, out.first, out.last = current, first, last
    if state is not None:
        try:
            at = json.loads(state).get("at")
        except (ValueError, AttributeError):
            at = None
        out.last_at = at if isinstance(at, str) else None
    if current != meta.get("end_link"):
        return _bad(
            out, None, "the recomputed end link differs from the manifest's: events and chain were rewritten together"
        )
    return out


def _take_start(out: Chain, position: int, state: bytes) -> None:
    try:
        event = json.loads(state)
        out.review_starts[str(event["campaign"])] = (position, int(event["items"]), str(event["population_sha256"]))
    except (ValueError, TypeError, KeyError):
        return  # not a start event the ledger would have written: its campaign has no population file to match


def _take_review_event(out: Chain, position: int, state: bytes) -> None:
    try:
        event = json.loads(state)
        if event["type"] == "ReviewDecided":
            out.decisions[position] = (
                event["campaign"],
                event["item"],
                event["decision"],
                event["actor"],
                event["at"],
                event.get("reason"),
            )
        else:
            out.removals[position] = (event["type"], event["at"], _removed(event))
    except (ValueError, TypeError, KeyError):
        return  # not an event the ledger would have written: no record can name it


def _removed(event: dict[str, Any]) -> tuple[Any, ...]:
    """What a removal event takes away, as _grant_of names an item's grant."""
    if event["type"] == "RoleUnassigned":
        return ("grant", event["role"], event["principal"], event.get("tenant"), event.get("resource"))
    if event["type"] == "TeamMemberRemoved":
        return ("member", event["team"], event["member"])
    return ("team", event["team"])


def _grant_of(item: dict[str, Any]) -> set[tuple[Any, ...]]:
    """What a removal may take away to carry out the revoke of `item`: its assignment (held by its team for an
    item through a team), or for an item through a team, the membership or the team itself."""
    via = item.get("via")
    holder = f"team:{via}" if via else item.get("principal")
    out: set[tuple[Any, ...]] = {("grant", item.get("role"), holder, item.get("tenant"), item.get("resource"))}
    if via:
        out |= {("member", via, item.get("principal")), ("team", via)}
    return out


def check_record(
    name: str, record: Any, chain: Chain, population: dict[Any, tuple[Any, ...]] | None = None
) -> list[str]:
    """Problems of one campaign record (reviews/NAME.json) against the chained events: each decision it
    lists is the ReviewDecided event at its position (campaign, item, decision, reviewer, time, reason),
    every decision of the campaign among the events is listed, each item repeats its line of the population
    file (`population`: item: facts, when that file matched its start event), and each remediation it names
    is, at that position and after the population's position, a removal event of that type and time that
    takes away exactly that item's grant. Positions outside the bundle's events are not checked."""
    try:
        campaign, items = record["campaign"], record["items"]
        listed = {}
        for it in items:
            listed[it["item"]] = it
    except (TypeError, KeyError):
        return [f"{name}: not a campaign record (campaign, items)"]
    if not all(isinstance(it, dict) for it in listed.values()):
        return [f"{name}: not a campaign record (campaign, items)"]
    inside = range(chain.first, chain.last + 1)
    problems = []
    for position, (camp, item, decision, actor, at, reason) in sorted(chain.decisions.items()):
        it = listed.get(item) if camp == campaign else None
        if camp == campaign and (it is None or it.get("decision_position") != position):
            problems.append(f"{name}: the decision of item {item} at position {position} is not the one listed")
        elif it is not None and (it.get("decision"), it.get("decided_by"), it.get("decided_at"), it.get("reason")) != (
            decision,
            actor,
            at,
            reason,
        ):
            problems.append(
                f"{name}: item {item}'s decision differs from the ReviewDecided event at position {position}"
            )
    for it in listed.values():
        position = it.get("decision_position")
        if position is None and it.get("decision") is not None:
            problems.append(f"{name}: item {it['item']} lists a decision without its event's position")
        elif isinstance(position, int) and position in inside and position not in chain.decisions:
            problems.append(f"{name}: item {it['item']}'s decision names position {position}, which holds no decision")
        if population is not None and population.get(it["item"]) != tuple(it.get(f) for f in _ITEM_FACTS):
            problems.append(
                f"{name}: item {printable(it['item'])}'s principal, role, tenant, resource or team is not its "
                "line of the population file"
            )
        done = it.get("remediation")
        if done is None:
            continue
        if not isinstance(done, dict) or not isinstance(done.get("position"), int):
            problems.append(f"{name}: item {printable(it['item'])}'s remediation names no event position")
            continue
        position = done["position"]
        if position not in inside:
            continue
        removal = chain.removals.get(position)
        if removal is None or removal[:2] != (done.get("type"), done.get("at")):
            problems.append(
                f"{name}: item {printable(it['item'])}'s remediation names position {position}, which "
                f"holds no {printable(done.get('type'))} at {printable(done.get('at'))}"
            )
        elif removal[2] not in _grant_of(it):
            problems.append(
                f"{name}: item {printable(it['item'])}'s remediation names position {position}, a "
                f"{removal[0]} of another grant than the item's (not its role, principal, tenant, resource or team)"
            )
        elif isinstance(record.get("as_of_position"), int) and position <= record["as_of_position"]:
            problems.append(
                f"{name}: item {printable(it['item'])}'s remediation names position {position}, before the "
                "population it revokes from"
            )
    return problems[:20]


def review_stems(campaign: str) -> tuple[str, str]:
    """The file stems a campaign's files under reviews/ may have: its name when that is a plain file name
    (ASCII letters, digits, _ and -), and always its plain characters followed by ~ and a hash of the whole
    name (used for any other name, and for names equal but for case, which one case-insensitive file system
    would store as one file)."""
    plain = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "_" for ch in campaign)
    plain = plain[:60].lstrip("_-") or "campaign"
    hashed = f"{plain}~{hashlib.sha256(campaign.encode()).hexdigest()[:16]}"
    return (campaign if _PLAIN_STEM.match(campaign) else hashed), hashed


def check_reviews(names: list[str], open_member: Opener, chain: Chain) -> tuple[list[str], list[str]]:
    """(problems, notes): every file under reviews/ has a review file's name, each population file has
    the line count and SHA-256 its campaign's ReviewStarted event (in the chained events) records, and each
    campaign record agrees with the chained decisions and removals (check_record)."""
    problems: list[str] = []
    notes: list[str] = []
    populations = {}
    records: list[str] = []
    proven: dict[
        Any, dict[Any, tuple[Any, ...]]
    ] = {}  # campaign: its population's facts, as its start event hashed them
    for name in sorted(n for n in names if n.startswith(REVIEWS)):
        match = REVIEW_FILE.match(name)
        if match is None:
            problems.append(f"{name}: not a review file's name ({REVIEWS}NAME{POPULATION} or {REVIEWS}NAME.json)")
        elif match.group(2) == POPULATION:
            populations[match.group(1)] = name
        else:
            records.append(name)
    for campaign, (position, items, sha) in sorted(chain.review_starts.items(), key=lambda kv: kv[1][0]):
        stems = [s for s in review_stems(campaign) if s in populations]
        if not stems:
            problems.append(
                f"{REVIEWS}{review_stems(campaign)[0]}{POPULATION}: missing, although review campaign "
                f"{campaign!r} started at position {position}"
            )
            continue
        name = populations.pop(stems[0])
        h, lines = hashlib.sha256(), 0
        with open_member(name) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                lines += chunk.count(b"\n")
        if lines != items or h.hexdigest() != sha:
            problems.append(
                f"{name}: {lines} lines and SHA-256 {h.hexdigest()}, but the ReviewStarted event of "
                f"campaign {campaign!r} at position {position} records {items} items and SHA-256 {sha}"
            )
        else:
            # The bytes the start event hashed: lines the ledger wrote, read again for the facts records repeat.
            facts: dict[Any, tuple[Any, ...]] = {}
            with open_member(name) as f:
                for line in f:
                    facts.update(_population_line(line))
            proven[campaign] = facts
    for name in records:
        with open_member(name) as f:
            data = f.read(MAX_REVIEW_RECORD + 1)
        try:
            record = json.loads(data) if len(data) <= MAX_REVIEW_RECORD else None
        except ValueError:
            record = None
        if record is None:
            problems.append(f"{name}: not JSON, or too large")
            continue
        facts = proven.get(record.get("campaign")) if isinstance(record, dict) else None
        problems += check_record(name, record, chain, facts)
    for name in sorted(populations.values()):
        notes.append(
            f"{name}: its campaign started before this bundle's events, so its start event (count and "
            "SHA-256) is not in the bundle: not checked against it"
        )
    return problems, notes


def _population_line(line: bytes) -> dict[Any, tuple[Any, ...]]:
    """{item: its facts} of one population line (nothing for a line that is not one)."""
    try:
        row = json.loads(line)
        if isinstance(row, list) and len(row) >= len(_ITEM_FACTS) and isinstance(row[0], int):
            return {row[0]: tuple(row[: len(_ITEM_FACTS)])}
    except (ValueError, RecursionError):
        pass
    return {}


def _bad(out: Chain, position: int | None, problem: str) -> Chain:
    out.first_bad, out.problem = position, problem
    return out


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    for line in f:
        yield line[:-1] if line.endswith(b"\n") else line


def check_signature(manifest: dict[str, Any], public_pem: bytes) -> str | None:
    """None if the manifest carries a valid Ed25519 signature by the key in `public_pem`; else why not."""
    signature = manifest.get(SIGNATURE_KEY)
    if not isinstance(signature, dict) or signature.get("algorithm") != "Ed25519":
        return "manifest.json carries no Ed25519 signature (none was made, or it was removed)"
    try:
        value = bytes.fromhex(str(signature.get("value", "")))
    except ValueError:
        return "manifest.json's signature is not hex"
    return _ed25519_problem(public_pem, signed_bytes(manifest), value)


def _ed25519_problem(public_pem: bytes, message: bytes, value: bytes) -> str | None:
    """None if `value` is an Ed25519 signature of `message` by the key in `public_pem`; else why not."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        return _openssl_verify(public_pem, message, value)
    try:
        load_pem_public_key(public_pem).verify(value, message)  # type: ignore[call-arg, union-attr]
    except (InvalidSignature, ValueError, TypeError):
        return "manifest.json's Ed25519 signature does not match (manifest edited, or another key)"
    return None


def _openssl_verify(public_pem: bytes, message: bytes, value: bytes) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in (("pub", public_pem), ("msg", message), ("sig", value)):
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        try:
            done = subprocess.run(
                [
                    "openssl",
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    paths["pub"],
                    "-rawin",
                    "-in",
                    paths["msg"],
                    "-sigfile",
                    paths["sig"],
                ],
                capture_output=True,
            )
        except OSError:
            return "cannot check the signature: neither the cryptography package nor openssl is available"
    if done.returncode != 0:
        return "manifest.json's Ed25519 signature does not match (manifest edited, or another key)"
    return None


# -- anchors (evidence verify runs these too, so both give the same verdicts) ----------------------


def digest_message(digest: dict[str, Any]) -> bytes:
    """What a digest's signature covers (the same bytes as ledger.signing.digest_message)."""
    return (
        f"access-ledger digest {digest.get('position')}:{digest.get('link')}:{digest.get('at')}:{digest.get('ledger')}"
    ).encode()


def read_digest(path: Path) -> dict[str, Any]:
    """A digest file (access-ledger digest --out); ValueError with the same words as ledger.integrity.read_digest."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"digest: no file {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"digest: {path} is not a digest file (JSON)") from None
    position = data.get("position") if isinstance(data, dict) else None
    if not isinstance(position, int) or isinstance(position, bool) or not isinstance(data.get("link"), str):
        raise ValueError(f"digest: {path} has no position and link")
    return data


def digest_problems(
    manifest: dict[str, Any], chain: Chain, digest: dict[str, Any], public_pem: bytes | None
) -> list[str]:
    """Does the digest vouch for the bundle: its position within the bundle's (or the one before) and its
    link the one recomputed there; with a public key, a signed digest's signature valid."""
    problems = []
    if public_pem is not None and digest.get("signature") is not None:
        signature = digest["signature"]
        if not isinstance(signature, dict) or signature.get("algorithm") != "Ed25519":
            problems.append("the digest: no Ed25519 signature")
        else:
            try:
                value = bytes.fromhex(str(signature.get("value", "")))
            except ValueError:
                value = b""
            if _ed25519_problem(public_pem, digest_message(digest), value) is not None:
                problems.append("the digest: the Ed25519 signature does not match (signed data edited, or another key)")
    meta = manifest.get("chain") or {}
    pos, first, last = int(digest["position"]), meta.get("first_position"), meta.get("last_position")
    if chain.problem is not None or first is None or last is None:
        return problems  # the chain's own failure is named already
    if pos > last:
        problems.append(
            f"the digest is at position {pos:,}, after this bundle's last position {last:,}: it cannot "
            "vouch for this bundle unless the events in between are given (export a bundle up to the "
            "digest's position, or verify with a digest taken at export time)"
        )
    elif pos < first - 1:
        problems.append(
            f"the digest is at position {pos:,}, before this bundle's first position {first:,}: it "
            "cannot vouch for this bundle"
        )
    elif chain.links.get(pos) != digest.get("link"):
        problems.append(
            f"position {pos:,} does not match the digest: the bundle's events up to there were rewritten "
            "(with the chain file to match, so the first changed event cannot be named)"
        )
    return problems


def continuity_problems(manifest: dict[str, Any], previous_manifest: dict[str, Any], previous: Path) -> list[str]:
    """Does this bundle start exactly where the previous one (checked already) ended: positions and links."""
    a, b = previous_manifest["chain"], manifest.get("chain") or {}
    if not b:
        return []
    if b["first_position"] > a["last_position"] + 1:
        return [
            f"gap after {previous}: it ends at position {a['last_position']:,}, this bundle starts at "
            f"{b['first_position']:,}: positions {a['last_position'] + 1:,}-{b['first_position'] - 1:,} are in "
            "neither"
        ]
    if b["first_position"] <= a["last_position"]:
        return [
            f"overlap with {previous}: it ends at position {a['last_position']:,}, this bundle starts at "
            f"{b['first_position']:,}, inside it"
        ]
    if b["start_link"] != a["end_link"]:
        return [
            f"this bundle does not continue {previous}: its link before position {b['first_position']:,} differs "
            "from that bundle's end link (the log was rewritten between the two exports)"
        ]
    return []


def digest_note(digest: dict[str, Any], path: Path) -> str:
    return f"position {int(digest['position']):,} matches the digest {path}"


def after_note(manifest: dict[str, Any], previous: Path) -> str:
    return f"starts where {previous} ended: position {manifest['chain']['first_position'] - 1:,} and its link"


class RepeatedKey(ValueError):
    """A JSON object that gives one key twice (readers differ on which value counts)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKey(key)
        obj[key] = value
    return obj


def load_manifest(raw: bytes) -> Any:
    """The manifest's JSON; RepeatedKey for a key given twice (one reader would take the first value and
    another the last, and a signature covers only one reading), ValueError if it is not JSON."""
    return json.loads(raw, object_pairs_hook=_unique_pairs)


def printable(value: Any, limit: int = 300) -> str:
    """A value read from a bundle, safe to print on a terminal: control characters escaped, bounded."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return text + ("..." if len(value if isinstance(value, str) else text) > limit else "")


def coverage(manifest: dict[str, Any]) -> str | None:
    """What the manifest says of how much of its period the bundle covers (None: the whole period), printable."""
    period = manifest.get("period")
    text = period.get("coverage") if isinstance(period, dict) else None
    return printable(text) if isinstance(text, str) else None


def vouching(manifest: dict[str, Any], signer: str | None, recompute: str) -> list[str]:
    """What vouches for each class of file that is not checked against the bundle's events here, one line
    each: the signer when a signature was checked, else nothing but the hashes the exporter wrote."""
    names = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    by = (
        signer
        if signer is not None
        else "nothing but the SHA-256 the exporter wrote into manifest.json (no signature checked)"
    )
    derived = [
        label
        for label, prefix in (
            ("audits/* (CSV, Parquet, JSON)", "audits/"),
            ("charts/*.csv", "charts/"),
            ("events/events.parquet", "events/events.parquet"),
            ("report.html", "report.html"),
        )
        if any(n.startswith(prefix) for n in names)
    ]
    lines = [
        f"{', '.join(derived + ['the counts in manifest.json'])}: computed from the events but not checked "
        f"against them here; vouched for by {by}; to check them against the events: {recompute}"
    ]
    if any(n.startswith(REVIEWS) and not n.endswith(POPULATION) for n in names):
        lines.append(
            f"{REVIEWS}*.json: decisions and remediation checked against the events, the rest (progress, "
            f"exceptions) vouched for by {by}"
        )
    lines.append(
        f"digest.json and the manifest's ledger, tool, command and generation time: the exporter's claims, "
        f"vouched for by {by}"
    )
    return lines


def coverage_problem(manifest: dict[str, Any], chain: Chain) -> str | None:
    """A coverage claim the chained events contradict: "covers up to T" must name the time of the bundle's
    last event, and "holds no events" a bundle without any."""
    period = manifest.get("period")
    if not isinstance(period, dict) or chain.problem is not None or "complete" not in period:
        return None
    events = chain.last - chain.first + 1
    if period.get("holds_no_events") and events > 0:
        return f"the manifest says the period holds no events, but the bundle holds {events:,}"
    if not period.get("complete") and events > 0 and period.get("covers_to") != chain.last_at:
        return (
            f"the manifest says the bundle covers up to {printable(period.get('covers_to'))}, but its last "
            f"event is at {printable(chain.last_at)}"
        )
    return None


# -- the bundle's scope: its filters and its HR file (evidence verify runs these too) --------------

HR_COPY = "hr/hr.csv"
FILTER_NAMES = ("tenant", "principal", "connector", "role")
#: An audit's JSON file (audits/NAME.json) is read whole for the parameters it records: larger is refused.
MAX_AUDIT_JSON = 1 << 30


def filter_words(filters: dict[str, Any]) -> str:
    """What a filtered bundle says of itself, in the report, the manifest's readers and both checkers' verdicts."""
    shown = ", ".join(f"{k} {printable(filters[k])}" for k in FILTER_NAMES if k in filters)
    return f"Filtered: {shown} only; rows outside this scope are not in this bundle"


def _filters(manifest: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The manifest's filters ({} for none), and why they are unusable (None if they are not)."""
    if "filters" not in manifest:
        return {}, None
    filters = manifest["filters"]
    if (
        not isinstance(filters, dict)
        or not filters
        or any(k not in FILTER_NAMES or not isinstance(v, str) for k, v in filters.items())
    ):
        return {}, f'{MANIFEST}: "filters" is not an object naming a tenant, principal, connector or role'
    return filters, None


def scope_problems(manifest: dict[str, Any], read: Callable[[str], bytes]) -> list[str]:
    """Does the manifest say the bundle's scope as its files record it: every audit filtered exactly by the
    manifest's filters (or listing the ones it cannot answer), the parameters in each audits/NAME.json (a hashed
    file) the manifest's, and an HR file's SHA-256 the one of its copy hr/hr.csv, which the leavers audit names.
    `read(name)` gives a listed member's bytes (already checked against the manifest)."""
    files = manifest["files"]
    audits = manifest.get("audits") if isinstance(manifest.get("audits"), dict) else {}
    filters, problem = _filters(manifest)
    problems = [problem] if problem else []
    for name, meta in sorted(audits.items()):
        shown = printable(name)
        if not isinstance(meta, dict):
            problems.append(f"{MANIFEST}: audit {shown!r} is not an object")
            continue
        params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
        unfiltered = meta.get("unfiltered", [])
        if not isinstance(unfiltered, list) or any(k not in filters for k in unfiltered):
            problems.append(f"{MANIFEST}: audit {shown}: its unfiltered list names a filter the manifest does not give")
            unfiltered = []
        for key in FILTER_NAMES:
            applied = params.get(key)
            if applied is not None and filters.get(key) != applied:
                problems.append(
                    f"{MANIFEST}: audit {shown} is filtered by {key} {printable(applied)!r}, which the manifest's "
                    "filters do not say (a partial bundle shown as complete)"
                )
            elif key in filters and applied is None and key not in unfiltered:
                problems.append(
                    f"{MANIFEST}: the filter {key} {printable(filters[key])!r} is neither applied to audit {shown} "
                    "nor listed as one it cannot answer"
                )
        summary_name = f"audits/{name}.json"
        if summary_name in files:
            try:
                data = read(summary_name)
                summary = json.loads(data) if len(data) <= MAX_AUDIT_JSON else None
            except (ValueError, RecursionError):
                summary = None
            if not isinstance(summary, dict) or summary.get("params") != params:
                problems.append(
                    f"{printable(summary_name)}: the parameters it records (filters included) are not the "
                    f"manifest's for audit {shown}"
                )
    problems += _hr_problems(manifest, files, audits)
    return problems


def _hr_problems(manifest: dict[str, Any], files: dict[str, Any], audits: dict[str, Any]) -> list[str]:
    hr = manifest.get("hr")
    others = sorted(n for n in files if n.startswith("hr/") and n != HR_COPY)
    problems = [f"{printable(n)}: not the bundle's HR file ({HR_COPY})" for n in others]
    if hr is None:
        if HR_COPY in files or "leavers" in audits:
            problems.append(
                f"{MANIFEST}: the bundle holds {HR_COPY} or a leavers audit but its manifest names no HR file"
            )
        return problems
    if not isinstance(hr, dict) or hr.get("file") != HR_COPY:
        return problems + [f'{MANIFEST}: "hr" does not name the HR file {HR_COPY}']
    if HR_COPY not in files:
        return problems + [f"{HR_COPY}: missing, although {MANIFEST} names it as the HR file"]
    if hr.get("sha256") != files[HR_COPY]["sha256"]:
        problems.append(
            f"{HR_COPY}: its SHA-256 is {files[HR_COPY]['sha256']}, the HR file's recorded in {MANIFEST} is "
            f"{printable(hr.get('sha256'))}: the HR file was swapped or its record edited"
        )
    leavers = audits.get("leavers")
    params = leavers.get("params") if isinstance(leavers, dict) else None
    if not isinstance(params, dict):
        problems.append(f"{MANIFEST}: it names an HR file but carries no leavers audit")
    elif (params.get("hr_file"), params.get("hr_sha256")) != (HR_COPY, hr.get("sha256")):
        problems.append(f"{MANIFEST}: the leavers audit was not run over the HR file {HR_COPY} it records")
    return problems


def scope_lines(manifest: dict[str, Any]) -> list[str]:
    """What a verdict says of the bundle's scope, one line each: its filters (and the audits that could not
    answer one), its HR file's SHA-256 to compare with the HR system's."""
    filters, _ = _filters(manifest)
    lines = []
    if filters:
        lines.append(filter_words(filters))
        audits = manifest.get("audits") if isinstance(manifest.get("audits"), dict) else {}
        for name, meta in sorted(audits.items()):
            unfiltered = meta.get("unfiltered") if isinstance(meta, dict) else None
            if isinstance(unfiltered, list) and unfiltered:
                lines.append(
                    f"audit {printable(name)}: not filtered by {', '.join(printable(k) for k in unfiltered)} "
                    "(it cannot answer it): every row of the period's scope otherwise"
                )
    hr = manifest.get("hr")
    if isinstance(hr, dict):
        lines.append(
            f"HR file: {HR_COPY}, SHA-256 {printable(hr.get('sha256'))}, {printable(hr.get('rows'))} people (given as "
            f"{printable(hr.get('source'))}): the leavers audit reconciles it; compare it with the HR system's file"
        )
    return lines


# -- standalone use ------------------------------------------------------------------------------


class Refused(ValueError):
    """A bundle that cannot be read safely (not a regular file, too large, a malformed manifest): one line."""


def check_name(name: str) -> str | None:
    """Why a member name is unsafe, or None: relative, normalised, posix, no `..`."""
    if not name or "\\" in name or "\x00" in name:
        return "not a plain relative name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute name"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "a name leading outside the bundle (..)"
    if any(p in ("", ".") for p in parts):
        return "not a normalised name"
    return None


def manifest_problem(manifest: Any) -> str | None:
    """Why a parsed manifest.json is unusable (an entry of the wrong type...), or None; the rules of
    `evidence verify` (reports/evidence.py _parse_manifest)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST} is not an evidence manifest ({FORMAT})"
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        return f'{MANIFEST}: "files" is not an object of file entries'
    for name, entry in listed.items():
        why = check_name(name)
        if why or name == MANIFEST:
            return f"{MANIFEST}: file entry {printable(name)!r} is {why or 'the manifest itself'}"
        if not isinstance(entry, dict):
            return f"{MANIFEST}: file entry {printable(name)!r} is not an object"
        sha, size = entry.get("sha256"), entry.get("bytes")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            return f'{MANIFEST}: file entry {printable(name)!r}: "sha256" is not 64 lowercase hex digits'
        if not (isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 1 << 53):
            return f'{MANIFEST}: file entry {printable(name)!r}: "bytes" is not a size in bytes'
    for key in ("period", "ledger", "audits", "charts", "reviews", "tool", "checker", "signature"):
        if key in manifest and not isinstance(manifest[key], dict):
            return f'{MANIFEST}: "{key}" is not an object'
    return None


class _Bounded:
    """A member opened for reading: never more than `limit` bytes (a longer member is refused)."""

    def __init__(self, f: IO[bytes], name: str, limit: int):
        self.f, self.name, self.left = f, name, limit

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def read(self, n: int = -1) -> bytes:
        want = self.left + 1 if n < 0 else min(n, self.left + 1)
        data = b"".join(_chunks(self.f, want))
        self.left -= len(data)
        if self.left < 0:
            raise Refused(f"{self.name}: longer than the {len(data) + self.left - 1:,} bytes expected")
        return data

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        while chunk := self.read(CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def _chunks(f: IO[bytes], want: int) -> Iterator[bytes]:
    while want > 0 and (chunk := f.read(min(CHUNK, want))):
        want -= len(chunk)
        yield chunk


class Reader:
    """A bundle folder or zip read as hostile input, as `evidence verify` reads it (reports/bundle_reader.py):
    regular files only (no symlink followed, a FIFO never blocks), each member read to at most the size the
    manifest gives it, the manifest to MANIFEST_LIMIT, zip members with unique safe names."""

    def __init__(self, bundle: Path):
        self.path = bundle
        self.zip: zipfile.ZipFile | None = None
        self.infos: dict[str, zipfile.ZipInfo] = {}
        self.limits: dict[str, int] = {MANIFEST: MANIFEST_LIMIT}
        st = os.stat(bundle)
        if stat.S_ISDIR(st.st_mode):
            return
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{bundle} is neither a bundle folder nor a zip file (not a regular file)")
        try:
            self.zip = zipfile.ZipFile(bundle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
            raise Refused(f"{bundle} is neither a bundle folder nor a readable zip file") from None
        folders: set[str] = set()
        for info in self.zip.infolist():
            name = info.filename
            why = check_name(name.rstrip("/") if info.is_dir() else name)
            if why:
                raise Refused(f"member {printable(name)!r} is {why}")
            if info.is_dir():
                folders.add(name.rstrip("/"))
                continue
            if name in self.infos:
                raise Refused(f"member {printable(name)!r} appears more than once")
            self.infos[name] = info
            folders.update(str(p) for p in PurePosixPath(name).parents if str(p) != ".")
        for name in self.infos:
            if name in folders:
                raise Refused(f"member {printable(name)!r} is both a file and a folder")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def names(self) -> list[str]:
        """Every member that is not a folder (symlinks, FIFOs and devices in a folder included)."""
        if self.zip is not None:
            return sorted(self.infos)
        out: list[str] = []
        todo = [(str(self.path), "")]  # no recursion: a hostile folder may nest deeper than Python's stack
        while todo:
            folder, prefix = todo.pop()
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        todo.append((e.path, prefix + e.name + "/"))
                    else:
                        out.append(prefix + e.name)
        return sorted(out)

    def open(self, name: str) -> _Bounded:
        """A member listed in the manifest (or the manifest), bounded by its listed size."""
        limit = self.limits.get(name)
        if limit is None:
            raise Refused(f"{name}: not listed in {MANIFEST}")
        if self.zip is not None:
            info = self.infos.get(name)
            if info is None:
                raise KeyError(name)
            if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
                raise Refused(f"{name}: not a regular file (a zip member marked as a symlink or special file)")
            if info.flag_bits & 0x1:
                raise Refused(f"{name}: an encrypted member")
            if info.file_size > limit:
                raise Refused(f"{name}: {info.file_size:,} bytes, more than the {limit:,} expected")
            return _Bounded(self.zip.open(info), name, limit)
        why = check_name(name)
        if why:
            raise Refused(f"{name}: {why}")
        parts, fd, opened = name.split("/"), os.open(self.path, os.O_RDONLY | os.O_DIRECTORY), []
        opened.append(fd)
        try:
            for part in parts[:-1]:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                opened.append(fd)
            leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise Refused(f"{name}: not a regular file (a symlink on its path)") from None
            raise
        finally:
            for d in opened:
                os.close(d)
        st = os.fstat(leaf)
        if not stat.S_ISREG(st.st_mode):
            os.close(leaf)
            raise Refused(f"{name}: not a regular file")
        if st.st_size > limit:
            os.close(leaf)
            raise Refused(f"{name}: {st.st_size:,} bytes, more than the {limit:,} expected")
        os.set_blocking(leaf, True)
        return _Bounded(os.fdopen(leaf, "rb"), name, limit)


def _files(bundle: Path) -> tuple[dict[str, Any], Opener, list[str]]:
    """The bundle's manifest, an opener of its members, and its files that differ from the manifest;
    Refused for a bundle that cannot be read safely."""
    problems = []
    reader = Reader(bundle)
    if MANIFEST not in reader.names():
        raise Refused(f"no {MANIFEST}: not an evidence bundle")
    try:
        with reader.open(MANIFEST) as f:
            raw = f.read()
    except Refused:
        raise
    except UNREADABLE as exc:  # a bad CRC, a local header that names another file
        raise Refused(f"{MANIFEST}: unreadable zip member ({printable(str(exc))})") from None
    try:
        manifest = load_manifest(raw)
    except RepeatedKey as exc:
        raise Refused(f"{MANIFEST} gives the key {printable(str(exc))!r} twice") from None
    except (ValueError, RecursionError):
        raise Refused(f"{MANIFEST} is not JSON") from None
    why = manifest_problem(manifest)
    if why:
        raise Refused(why)
    listed = manifest["files"]
    reader.limits.update((name, entry["bytes"]) for name, entry in listed.items())
    present = set(reader.names())
    for name in sorted(present - set(listed) - {MANIFEST}):
        problems.append(f"added: {printable(name)}")
    for name, entry in sorted(listed.items()):
        if name not in present:
            problems.append(f"missing: {printable(name)}")
            continue
        h, size = hashlib.sha256(), 0
        try:
            with reader.open(name) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except Refused as exc:
            problems.append(str(exc))
            continue
        except (OSError, KeyError):
            problems.append(f"missing: {printable(name)}")
            continue
        except UNREADABLE as exc:  # a zip member whose local header or data disagree with its directory
            problems.append(f"{printable(name)}: unreadable zip member ({printable(str(exc))})")
            continue
        if h.hexdigest() != entry["sha256"] or size != entry["bytes"]:
            problems.append(f"changed: {printable(name)}")
    return manifest, reader.open, problems


def _previous(previous: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest of the bundle given to --after, if its files and chain hold; else the problem."""
    try:
        manifest, open_member, problems = _files(previous)
        if problems:
            return None, [f"--after {previous}: that bundle does not match its own manifest"]
        chain = recompute(manifest, open_member)
    except UNREADABLE:
        return None, [f"--after {previous}: that bundle does not match its own manifest"]
    if chain.problem is not None:
        return None, [f"--after {previous}: {chain.problem}"]
    return manifest, []


def check(
    bundle: Path, public_key: Path | None = None, digest_path: Path | None = None, after: Path | None = None
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(problems, notes, manifest) of a bundle checked against the anchors given; ValueError for an unusable
    anchor file."""
    digest = read_digest(digest_path) if digest_path is not None else None
    public_pem = public_key.read_bytes() if public_key is not None else None
    problems: list[str] = []
    notes: list[str] = []
    manifest: dict[str, Any] = {}
    manifest, open_member, problems = _files(bundle)  # Refused: the bundle cannot be read safely at all
    files_differ = bool(problems)
    try:
        listed = manifest["files"]
        chain = recompute(manifest, open_member, (int(digest["position"]),) if digest else ())
        if chain.problem:
            # A bundle of an earlier version carries no chain: a note, unless an anchor was asked for (as in
            # evidence verify).
            anchored = digest is not None or public_pem is not None or after is not None
            (problems if anchored or "chain" in manifest else notes).append(chain.problem)
        else:
            found, notes = check_reviews(sorted(listed), open_member, chain)
            problems += found
            wrong = coverage_problem(manifest, chain)
            if wrong:
                problems.append(wrong)
        if not files_differ:  # (a file that differs is named already; its contents say nothing)
            problems += scope_problems(manifest, lambda name: _read_whole(open_member, name))
        if digest is not None:
            found = digest_problems(manifest, chain, digest, public_pem)
            problems += found
            if not found and not chain.problem:
                notes.append(digest_note(digest, digest_path))  # type: ignore[arg-type]
        signer = None
        if public_pem is not None:
            problem = check_signature(manifest, public_pem)
            if problem:
                problems.append(problem)
            else:
                signer = f"the signer of manifest.json ({public_key})"
        if after is not None:
            previous, found = _previous(after)
            found = found or continuity_problems(manifest, previous or {}, after)
            problems += found
            if not found and not chain.problem:
                notes.append(after_note(manifest, after))
        if not problems:
            # This checker has no DuckDB: the outputs computed from the events are recomputed by access-ledger.
            notes += vouching(manifest, signer, "access-ledger evidence verify --recompute (this checker cannot)")
    except UNREADABLE as exc:
        problems.append(f"cannot read the bundle: {printable(str(exc))}")
    return problems, notes, manifest


def _read_whole(open_member: Opener, name: str) -> bytes:
    with open_member(name) as f:
        return f.read()


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="check_bundle.py",
        allow_abbrev=False,
        description="Check an access-ledger evidence bundle with Python's standard library alone: every file "
        "against manifest.json, the hash chain over its events, and the anchors given.",
        epilog="Exit 0: all checked; 1: a problem, named on stderr; 2: a usage error or an unreadable anchor file.",
    )
    parser.add_argument(
        "bundle", nargs="?", type=Path, help="The bundle folder or zip (default: the folder this file is in)."
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="The signer's signing.pub: manifest.json "
        "(and the end link it holds) must carry a valid Ed25519 signature by it.",
    )
    parser.add_argument(
        "--digest",
        type=Path,
        metavar="FILE",
        help="A digest you hold (access-ledger digest "
        "--out): its link must be the one the bundle's events recompute at its position.",
    )
    parser.add_argument(
        "--after",
        type=Path,
        metavar="PREVIOUS",
        help="The bundle before this one: this one must start exactly where it ended (positions and links).",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    bundle = args.bundle if args.bundle is not None else Path(__file__).resolve().parent
    try:
        problems, notes, manifest = check(bundle, args.public_key, args.digest, args.after)
    except Refused as exc:
        print(f"FAILED: {bundle}: {exc}", file=sys.stderr)  # one line: nothing more can be said of it
        return 1
    except (OSError, ValueError) as exc:
        # An anchor file that cannot be used is a usage error, as for `evidence verify`.
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    scope = scope_lines(manifest)
    if problems:
        for line in scope:
            print(f"scope: {line}", file=sys.stderr)
        print(f"FAILED: {len(problems)} problem(s) in {bundle}", file=sys.stderr)
        return 1
    anchored = [
        o
        for o, v in (("--public-key", args.public_key), ("--digest", args.digest), ("--after", args.after))
        if v is not None
    ]
    chained = "the chain recomputes to its end link" if "chain" in manifest else "it carries no chain"
    print(
        f"OK: {bundle}: every file matches manifest.json and {chained}"
        + (
            f" (anchored by {' and '.join(anchored)})"
            if anchored
            else "; nothing outside the bundle vouches for it: give --public-key, --digest or --after"
        )
    )
    said = coverage(manifest)
    if said:
        print(f"coverage: {said}")
    for line in scope:
        print(f"scope: {line}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
