"""Self-verifying evidence bundles: the chain over a bundle's events, the manifest's Ed25519 signature,
and the anchors from outside the bundle that `evidence verify` takes (DESIGN section 5).

A bundle carries `events/chain.jsonl` (one line per event of `events/events.jsonl`: what the link
formula covers beyond the event's line, and the first 16 hex digits of its link, so the first
changed event is named) and, in manifest.json, `chain`: the first and last positions, the link
before the first (`start_link`) and the last link (`end_link`). `check_bundle.py`, copied into every
bundle, recomputes it with the standard library alone; `evidence verify` runs the same code
(reports/check_bundle.py) and then checks the anchors:

- `--digest FILE`: the digest's position lies in the bundle and its link is the one recomputed there;
- `--public-key FILE`: the manifest (which holds the end link) carries a valid signature by that key;
- `--after A`: the bundle starts where bundle A ended (positions and links).

With the chain, each access review's population file (reviews/NAME.population.jsonl) is checked
against the count and SHA-256 of its campaign's ReviewStarted event among the chained events.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from reports import check_bundle
from reports.check_bundle import CHAIN, LINK_CHARS, SIGNATURE_KEY

if TYPE_CHECKING:
    from ledger.app import AccessLedger

CHECKER = "check_bundle.py"
NO_ANCHOR = (
    "nothing outside the bundle vouches for it: whoever exported it could have rewritten events, chain "
    "and manifest together; check it against a digest you hold (--digest), the signer's public key "
    "(--public-key) or the bundle before it (--after)"
)


# -- export ------------------------------------------------------------------------------------


class ChainWriter:
    """events/chain.jsonl for positions first..last, written from the verify walk's batches of
    (position, originator, version, topic, state, link, at) rows, which come in position order."""

    def __init__(self, path: Path, first: int, last: int, hashed: bool = True):
        """Without `hashed`, the file is not hashed as it is written (a segment's part, hashed once joined)."""
        from ledger.app import TOPIC_PREFIX
        from ledger.store import GENESIS_LINK, usage_stream

        self.path, self.first, self.last = path, first, last
        self.f = open(path, "wb")
        self.prefix = TOPIC_PREFIX
        self.usage = usage_stream(0)[:16]
        self.heads: dict[str, bytes] = {}  # topic: how its events' lines begin
        self.pos, self.link = 0, GENESIS_LINK  # the last position passed, and its link
        self.start_link: str | None = GENESIS_LINK if first == 1 else None
        self.end_link: str | None = None
        self.size = 0
        self.sha = hashlib.sha256() if hashed else None

    def take(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        first, last = self.first, self.last
        if rows[-1][0] >= first - 1 and rows[0][0] <= last:
            # The hot loop of a 10M-event export: a usage event (most of them) is one short line.
            heads, usage, prefix = self.heads, self.usage, self.prefix
            out: list[str] = []
            append = out.append
            for pos, oid, ver, topic, state, link, *_ in rows:
                if pos < first or pos > last:
                    if pos == first - 1:
                        self.start_link = link
                    continue
                head = heads.get(topic)
                if head is None:
                    head = heads[topic] = (
                        b'{"type":"%s"' % topic[len(prefix) :].encode() if topic.startswith(prefix) else b"\0"
                    )
                if not state.startswith(head):
                    append(json.dumps([link[:LINK_CHARS], oid, ver, topic]) + "\n")
                elif ver == 1 and oid.startswith(usage) and oid[16:] == f"{pos:016x}":
                    append(f'["{link[:LINK_CHARS]}"]\n')
                else:
                    append(f'["{link[:LINK_CHARS]}","{oid}",{ver:d}]\n')
                if pos == last:
                    self.end_link = link
            self._write("".join(out).encode())
        self.pos, self.link = rows[-1][0], rows[-1][5]

    def _write(self, data: bytes) -> None:
        if data:
            self.f.write(data)
            if self.sha is not None:
                self.sha.update(data)
            self.size += len(data)

    def close_part(self) -> dict[str, str | None]:
        """Close the file of a segment: the link of position first - 1 and of position last, if it passed them."""
        self.f.close()
        return {"start_link": self.start_link, "end_link": self.end_link}

    def finish(self, led: AccessLedger) -> dict[str, Any]:
        """Close the file, after computing the rest from the stored rows when the walk stopped short (a
        ledger that fails verification: the bundle then holds, and chains, what is stored); return the
        manifest's `chain` entry and the file's hash."""
        from ledger.integrity import next_link

        store = led.store
        while self.pos < self.last:
            with store.transaction(write=False) as c:
                rows = store.read_raw(c, self.pos + 1, 20_000, self.last)
            if not rows:
                break
            computed = []
            link = self.link
            for pos, oid, ver, topic, state, *_ in rows:
                link = next_link(link, pos, oid, ver, topic, state)
                computed.append((pos, oid, ver, topic, state, link))
            self.take(computed)
        self.f.close()
        assert self.sha is not None
        return chain_entry(self.first, self.last, self.start_link, self.end_link, self.sha.hexdigest(), self.size)


def chain_entry(
    first: int, last: int, start_link: str | None, end_link: str | None, sha256: str, size: int
) -> dict[str, Any]:
    """The manifest's `chain` entry (with the file's hash, which the caller moves to `files`)."""
    from ledger.app import TOPIC_PREFIX
    from ledger.store import usage_stream

    return {
        "file": CHAIN,
        "first_position": first,
        "last_position": last,
        "start_link": start_link,
        "end_link": end_link if last >= first else start_link,
        "topic_prefix": TOPIC_PREFIX,
        "usage_stream_prefix": usage_stream(0)[:16],
        "link_chars": LINK_CHARS,
        "sha256": sha256,
        "bytes": size,
    }


def write_checker(folder: Path) -> None:
    """Copy the standalone checker (this package's reports/check_bundle.py) into the bundle."""
    shutil.copyfile(check_bundle.__file__, folder / CHECKER)


def checker_bytes() -> bytes:
    """The standalone checker of this installed version (what `evidence checker --out` writes)."""
    return Path(check_bundle.__file__).read_bytes()


def checker_entry() -> dict[str, str]:
    """The manifest's `checker`: the SHA-256 of this version's checker, which an auditor compares with the
    one they obtained independently (the copy in the bundle travelled with the evidence: never run it)."""
    return {
        "file": CHECKER,
        "sha256": hashlib.sha256(checker_bytes()).hexdigest(),
        "run": "python3 -I CHECKER BUNDLE, with a checker from `access-ledger evidence checker --out CHECKER`",
    }


def sign_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the Ed25519 signature of the manifest (it covers the chain's end link) when a signing key is set."""
    from ledger.signing import sign

    signature = sign(check_bundle.signed_bytes(manifest))
    if signature is not None:
        manifest[SIGNATURE_KEY] = signature
    return manifest


# -- verify ------------------------------------------------------------------------------------


@contextmanager
def _members(path: Path) -> Any:
    """open(name) for the members of a bundle folder or zip (only the fixed names this module reads; the
    files were checked against the manifest before)."""
    if path.is_file():
        with zipfile.ZipFile(path) as archive:
            yield archive.open
        return

    def open_file(name: str) -> IO[bytes]:
        return open(path.joinpath(*PurePosixPath(name).parts), "rb")

    yield open_file


def check_anchors(
    path: Path,
    manifest: dict[str, Any],
    *,
    digest: Path | None = None,
    public_key: Path | None = None,
    after: Path | None = None,
    verify: Callable[[Path], Any],
) -> tuple[list[str], list[str]]:
    """Recompute the bundle's chain and check the anchors given: (problems, notes). `verify` checks the
    files of the bundle named by --after against its manifest (evidence verify's own check)."""
    from ledger.integrity import KEY_ENV, read_digest, seal_key

    problems: list[str] = []
    notes: list[str] = []
    d = read_digest(digest) if digest is not None else None
    want = (int(d["position"]),) if d is not None else ()
    reviews: tuple[list[str], list[str]] = ([], [])
    try:
        with _members(path) as open_member:
            chain = check_bundle.recompute(manifest, open_member, want)
            if chain.problem is None:
                reviews = check_bundle.check_reviews(sorted(manifest["files"]), open_member, chain)
    except (OSError, KeyError, zipfile.BadZipFile):
        chain = check_bundle.Chain()
        chain.problem = f"{check_bundle.EVENTS}, {CHAIN} or a file under {check_bundle.REVIEWS} cannot be read"
    anchored = digest is not None or public_key is not None or after is not None
    if chain.problem is not None:
        # A bundle of an earlier version carries no chain: a note, unless an anchor was asked for.
        (problems if anchored or "chain" in manifest else notes).append(chain.problem)
    else:
        meta = manifest["chain"]
        notes.append(
            f"chain recomputed over positions {meta['first_position']:,}-{meta['last_position']:,}: "
            f"end link {chain.end_link}"
        )
        problems += reviews[0]
        notes += reviews[1]
        wrong = check_bundle.coverage_problem(manifest, chain)
        if wrong is not None:
            problems.append(wrong)
    if seal_key() is not None and not isinstance(manifest.get("signature"), dict):
        problems.append(
            f"manifest.json carries no HMAC signature, but {KEY_ENV} is set (removed, or made without the key)"
        )
    if public_key is not None:
        from ledger.signing import load_public_key

        load_public_key(public_key)  # one clear line if the file is no Ed25519 public key
    if d is not None:
        found = check_bundle.digest_problems(manifest, chain, d, public_key.read_bytes() if public_key else None)
        problems += found
        if not found and chain.problem is None and "chain" in manifest:
            notes.append(check_bundle.digest_note(d, digest))  # type: ignore[arg-type]
    if public_key is not None:
        problem = check_bundle.check_signature(manifest, public_key.read_bytes())
        if problem is not None:
            problems.append(problem)
        else:
            notes.append(f"manifest.json (and the end link it holds) signed by {public_key}")
    if after is not None:
        found = _after_problems(manifest, after, verify)
        problems += found
        if not found and chain.problem is None and "chain" in manifest:
            notes.append(check_bundle.after_note(manifest, after))
    if not anchored:
        notes.append(NO_ANCHOR)
    return problems, notes


def _after_problems(manifest: dict[str, Any], previous: Path, verify: Callable[[Path], Any]) -> list[str]:
    check = verify(previous)
    mismatch = [f"--after {previous}: that bundle does not match its own manifest"]
    if check.changed or check.missing or check.added:
        return mismatch
    prev_manifest = check.manifest
    with _members(previous) as open_member:
        prev_chain = check_bundle.recompute(prev_manifest, open_member)
    if prev_chain.problem is not None:  # named as check_bundle.py names it
        return [f"--after {previous}: {prev_chain.problem}"]
    if not check.ok:
        return mismatch
    return check_bundle.continuity_problems(manifest, prev_manifest, previous)
