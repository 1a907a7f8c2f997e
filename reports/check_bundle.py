#!/usr/bin/env python3
"""Check an access-ledger evidence bundle without access-ledger: Python's standard library only (and, for a
signature, the `cryptography` package or the `openssl` command).

    python3 check_bundle.py [BUNDLE] [--public-key signing.pub] [--digest digest.json]

BUNDLE is the bundle folder or zip (default: the folder this file is in). It re-hashes every file
listed in manifest.json, recomputes the hash chain over events/events.jsonl from the manifest's
start link, naming the first event that does not match events/chain.jsonl, and compares the end
link with the manifest's. --public-key: manifest.json must carry a valid Ed25519 signature by that
key (it covers the end link). --digest: a digest of the ledger (access-ledger digest) at a position
inside the bundle must name the link recomputed there. Each population file of an access review,
reviews/NAME.population.jsonl, must have the line count and SHA-256 that its campaign's ReviewStarted
event among the events records. Exit 0: all checked; 1: a problem, named.

The chain: link(p) = SHA-256 of "PREV\\nP\\nORIGINATOR\\nVERSION\\nTOPIC\\n" followed by the event's line
(without its newline), where PREV is link(p - 1) in hex. Line i of events/chain.jsonl belongs to line i
of events/events.jsonl (position first_position + i - 1) and is a JSON array: [first 16 hex digits of
the link] for a usage event (originator: usage_stream_prefix then the position as 16 hex digits;
version 1), or [link16, originator, version], or [link16, originator, version, topic] when the topic
is not topic_prefix followed by the event's "type".

This file is also the access-ledger module reports/check_bundle.py: `evidence verify` runs this code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path, PurePosixPath
from typing import IO, Any

MANIFEST = "manifest.json"
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
#: The events that can carry a review's revocation out (their position, type and time are checked).
_REMOVALS = tuple(b'{"type":"%s"' % t for t in (b"RoleUnassigned", b"TeamMemberRemoved", b"TeamDeleted", b"RoleDeleted"))
#: A campaign's record (reviews/NAME.json) is read whole: larger than this is refused.
MAX_REVIEW_RECORD = 1 << 30

Opener = Callable[[str], IO[bytes]]


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    """What the manifest's Ed25519 signature covers: the manifest without its signatures, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k not in ("signature", SIGNATURE_KEY)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def link(prev: str, position: int, originator: str, version: int, topic: str, state: bytes) -> str:
    return hashlib.sha256(b"%s\n%d\n%s\n%d\n%s\n%s" % (prev.encode(), position, originator.encode(), version,
                                                        topic.encode(), state)).hexdigest()


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
        # position: (type, at) of each event that can carry a revocation out
        self.removals: dict[int, tuple[str, str]] = {}
        self.first = self.last = 0


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
    with open_member(EVENTS) as events, open_member(CHAIN) as chain:
        for state, entry in zip_longest(_lines(events), _lines(chain)):
            position += 1
            if state is None or entry is None or position > last:
                return _bad(out, position, f"{EVENTS} and {CHAIN} do not hold the {last - first + 1:,} events of "
                                           f"positions {first:,} to {last:,}: line {position - first + 1} is "
                                           "missing from one of them or added")
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
                return _bad(out, position, f"the event at position {position} (line {position - first + 1} of "
                                           f"{EVENTS}) does not match its chain link: changed, inserted, removed "
                                           "or reordered")
            if position in wanted:
                out.links[position] = current
            if state.startswith(_REVIEW_STARTED):
                _take_start(out, position, state)
            elif state.startswith(_REVIEW_DECIDED) or state.startswith(_REMOVALS):
                _take_review_event(out, position, state)
    if position != last:
        return _bad(out, position + 1, f"{EVENTS} ends at position {position:,}, the period at {last:,} "
                                       "(events removed)")
    out.end_link, out.first, out.last = current, first, last
    if current != meta.get("end_link"):
        return _bad(out, None, "the recomputed end link differs from the manifest's: events and chain were "
                               "rewritten together")
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
            out.decisions[position] = (event["campaign"], event["item"], event["decision"], event["actor"],
                                       event["at"], event.get("reason"))
        else:
            out.removals[position] = (event["type"], event["at"])
    except (ValueError, TypeError, KeyError):
        return  # not an event the ledger would have written: no record can name it


def check_record(name: str, record: Any, chain: Chain) -> list[str]:
    """Problems of one campaign record (reviews/NAME.json) against the chained events: each decision it
    lists is the ReviewDecided event at its position (campaign, item, decision, reviewer, time, reason),
    every decision of the campaign among the events is listed, and each remediation it names is a removal
    event of that type and time at that position. Positions outside the bundle's events are not checked."""
    try:
        campaign, items = record["campaign"], record["items"]
        listed = {}
        for it in items:
            listed[it["item"]] = it
    except (TypeError, KeyError):
        return [f"{name}: not a campaign record (campaign, items)"]
    inside = range(chain.first, chain.last + 1)
    problems = []
    for position, (camp, item, decision, actor, at, reason) in sorted(chain.decisions.items()):
        it = listed.get(item) if camp == campaign else None
        if camp == campaign and (it is None or it.get("decision_position") != position):
            problems.append(f"{name}: the decision of item {item} at position {position} is not the one listed")
        elif it is not None and (it.get("decision"), it.get("decided_by"), it.get("decided_at"), it.get("reason")) \
                != (decision, actor, at, reason):
            problems.append(f"{name}: item {item}'s decision differs from the ReviewDecided event at position "
                            f"{position}")
    for it in listed.values():
        position = it.get("decision_position")
        if position is None and it.get("decision") is not None:
            problems.append(f"{name}: item {it['item']} lists a decision without its event's position")
        elif isinstance(position, int) and position in inside and position not in chain.decisions:
            problems.append(f"{name}: item {it['item']}'s decision names position {position}, which holds no "
                            "decision")
        done = it.get("remediation")
        if isinstance(done, dict) and isinstance(done.get("position"), int) and done["position"] in inside \
                and chain.removals.get(done["position"]) != (done.get("type"), done.get("at")):
            problems.append(f"{name}: item {it['item']}'s remediation names position {done['position']}, which "
                            f"holds no {done.get('type')} at {done.get('at')}")
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
            problems.append(f"{REVIEWS}{review_stems(campaign)[0]}{POPULATION}: missing, although review campaign "
                            f"{campaign!r} started at position {position}")
            continue
        name = populations.pop(stems[0])
        h, lines = hashlib.sha256(), 0
        with open_member(name) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                lines += chunk.count(b"\n")
        if lines != items or h.hexdigest() != sha:
            problems.append(f"{name}: {lines} lines and SHA-256 {h.hexdigest()}, but the ReviewStarted event of "
                            f"campaign {campaign!r} at position {position} records {items} items and SHA-256 {sha}")
    for name in records:
        with open_member(name) as f:
            data = f.read(MAX_REVIEW_RECORD + 1)
        try:
            record = json.loads(data) if len(data) <= MAX_REVIEW_RECORD else None
        except ValueError:
            record = None
        problems += check_record(name, record, chain) if record is not None else [f"{name}: not JSON, or too large"]
    for name in sorted(populations.values()):
        notes.append(f"{name}: its campaign started before this bundle's events, so its start event (count and "
                     "SHA-256) is not in the bundle: not checked against it")
    return problems, notes


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
    message = signed_bytes(manifest)
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
            done = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["pub"], "-rawin",
                                   "-in", paths["msg"], "-sigfile", paths["sig"]], capture_output=True)
        except OSError:
            return "cannot check the signature: neither the cryptography package nor openssl is available"
    if done.returncode != 0:
        return "manifest.json's Ed25519 signature does not match (manifest edited, or another key)"
    return None


# -- standalone use ------------------------------------------------------------------------------

def _opener(bundle: Path) -> tuple[Opener, Callable[[], list[str]]]:
    if bundle.is_file():
        archive = zipfile.ZipFile(bundle)
        return (lambda name: archive.open(name)), (lambda: [i.filename for i in archive.infolist()
                                                          if not i.is_dir()])

    def open_file(name: str) -> IO[bytes]:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{name!r} is outside the bundle")
        return open(bundle.joinpath(*rel.parts), "rb")

    return open_file, lambda: [p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()]


def main(argv: list[str]) -> int:
    args, options = [], {}
    it = iter(argv)
    for arg in it:
        if arg in ("--public-key", "--digest"):
            options[arg] = next(it, None)
        else:
            args.append(arg)
    bundle = Path(args[0]) if args else Path(__file__).resolve().parent
    problems: list[str] = []
    notes: list[str] = []
    try:
        open_member, names = _opener(bundle)
        with open_member(MANIFEST) as f:
            manifest = json.loads(f.read())
        listed = manifest["files"]
        for name in sorted(set(names()) - set(listed) - {MANIFEST}):
            problems.append(f"added: {name}")
        for name, entry in sorted(listed.items()):
            h, size = hashlib.sha256(), 0
            try:
                with open_member(name) as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
            except (OSError, KeyError):
                problems.append(f"missing: {name}")
                continue
            if h.hexdigest() != entry.get("sha256") or size != entry.get("bytes"):
                problems.append(f"changed: {name}")
        digest = json.loads(Path(options["--digest"]).read_text()) if options.get("--digest") else None
        want = (int(digest["position"]),) if digest else ()
        chain = recompute(manifest, open_member, want)
        if chain.problem:
            problems.append(chain.problem)
        else:
            found, notes = check_reviews(sorted(listed), open_member, chain)
            problems += found
        if digest and not chain.problem:
            meta, pos = manifest["chain"], int(digest["position"])
            if not meta["first_position"] - 1 <= pos <= meta["last_position"]:
                problems.append(f"the digest is at position {pos}, outside this bundle's positions "
                                f"{meta['first_position']}-{meta['last_position']}: it cannot vouch for it")
            elif chain.links.get(pos) != digest.get("link"):
                problems.append(f"position {pos} does not match the digest: the bundle's events were rewritten")
        if options.get("--public-key"):
            problem = check_signature(manifest, Path(options["--public-key"]).read_bytes())
            if problem:
                problems.append(problem)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        problems.append(f"cannot read the bundle: {exc}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {bundle}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    anchored = [o for o in ("--public-key", "--digest") if options.get(o)]
    print(f"OK: {bundle}: every file matches manifest.json and the chain recomputes to its end link"
          + (f" (anchored by {' and '.join(anchored)})" if anchored else
             "; nothing outside the bundle vouches for it: give --public-key or --digest"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
