"""The evidence export's log walk in segments (worker processes, each writing its part of
events/events.jsonl and events/chain.jsonl, joined here in position order) against its oracle, the
single walk: the same files, hashes, chain entry and verify result, on both backends, for any period
and any segment size. A ledger whose segments do not match falls back to the single walk; a walker
whose parent died stops."""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ledger.integrity as integrity
from ledger.app import AccessLedger
from ledger.cli import app
from ledger.generator import generate
from ledger.store import GENESIS_LINK
from reports import evidence
from test_trust import _sql, _user_event

runner = CliRunner()
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_runs = itertools.count()


@pytest.fixture
def generated(ledger_url: str) -> str:
    with AccessLedger.open(ledger_url, create=True) as led:
        led.import_lines(generate("large", END, events=3_000, users=20, tenants=3, roles=8, assignments=100,
                                  days=60).lines())
    return ledger_url


def _walk(monkeypatch: pytest.MonkeyPatch, mode: str, segment_min: int = 1) -> list[int]:
    """Make verify walk the log once, or in segments in two worker processes; the list fills with the
    start of every segment joined by the export."""
    monkeypatch.setattr(integrity, "PARALLEL_FROM", 1 if mode == "segments" else 10**12)
    monkeypatch.setattr(integrity, "SEGMENT_MIN", segment_min)
    monkeypatch.setattr(integrity.os, "cpu_count", lambda: 2)
    joined: list[int] = []
    collect = evidence._Parts.collect

    def spy(self: evidence._Parts, start: int, until: int, result: dict) -> None:
        joined.append(start)
        collect(self, start, until, result)

    monkeypatch.setattr(evidence._Parts, "collect", spy)
    return joined


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_segments_write_exactly_what_one_walk_writes(generated, tmp_path, monkeypatch, data):
    with AccessLedger.open(generated) as led:
        head = led.head()
        first = data.draw(st.integers(1, head), label="first")
        last = data.draw(st.integers(first - 1, head), label="last")  # first - 1: a period without events
        stored = b"".join(state + b"\n" for _, state in led.read_bytes(first, last))
    segment_min = data.draw(st.sampled_from([1, 500, 1_000, head // 2]), label="segment_min")
    written = {}
    for mode in ("one walk", "segments"):
        joined = _walk(monkeypatch, mode, segment_min)
        folder = tmp_path / f"{mode}-{next(_runs)}"
        folder.mkdir()
        result = evidence._verify_and_write(generated, folder / "events.jsonl", first, last)
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert sorted(files) == ["chain.jsonl", "events.jsonl"]  # no part left behind
        assert (len(joined) >= 2) == (mode == "segments"), joined
        assert result["verify"]["ok"] is True and result["verify"]["events"] == head
        assert files["events.jsonl"] == stored
        assert result["jsonl"] == {"sha256": hashlib.sha256(stored).hexdigest(), "bytes": len(stored)}
        chain = files["chain.jsonl"]
        assert result["chain"]["sha256"] == hashlib.sha256(chain).hexdigest()
        assert chain.count(b"\n") == max(0, last - first + 1)
        written[mode] = (result, files)
    assert written["segments"] == written["one walk"]
    chain = written["segments"][0]["chain"]
    with AccessLedger.open(generated) as led, led.store.transaction(write=False) as c:
        def link(position: int) -> str:
            if position == 0:
                return GENESIS_LINK
            c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
            return c.fetchone()[0]

        assert chain["start_link"] == link(first - 1)
        assert chain["end_link"] == link(last if last >= first else first - 1)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_parts_are_joined_in_position_order_whatever_order_the_segments_finish_in(tmp_path_factory, data):
    """_Parts on its own, segments finishing in any order: the joined files are those one writer makes."""
    from reports.bundle_chain import ChainWriter

    n = data.draw(st.integers(2, 60), label="events")
    cuts = sorted(data.draw(st.sets(st.integers(2, n), max_size=6), label="segment starts"))
    first = data.draw(st.integers(1, n), label="first")
    last = data.draw(st.integers(first - 1, n), label="last")
    rows = [(p, f"{p:032x}", 1 + p % 3, "ledger.events:UserCreated", b'{"type":"UserCreated","at":"%d"}' % p,
             f"{p:064x}", str(p)) for p in range(1, n + 1)]
    folder = tmp_path_factory.mktemp("parts")
    one = folder / "one"
    one.mkdir()
    with open(one / "events.jsonl", "wb") as f:
        lines = evidence._Lines(f, first, last)
        lines.take(rows)
    chain = ChainWriter(one / "chain.jsonl", first, last)
    chain.take(rows)
    entry = chain.finish(SimpleNamespace(store=None))  # type: ignore[arg-type]  # every position passed: no read
    segments = list(zip([1, *cuts], [c - 1 for c in cuts] + [n]))
    parts = evidence._Parts(folder, first, last)
    results = {}
    for a, b in segments:
        part = pickle.loads(pickle.dumps(parts)).open(a, b, f"{a - 1:064x}")  # as in a worker process
        part.take(rows[a - 1:b])
        results[a] = (b, part.close())
    for a in data.draw(st.permutations(list(results)), label="finishing order"):
        parts.collect(a, results[a][0], results[a][1])
    assert parts.complete(n)
    joined = parts.finish()
    parts.discard()
    assert (folder / "events.jsonl").read_bytes() == (one / "events.jsonl").read_bytes()
    assert (folder / "chain.jsonl").read_bytes() == (one / "chain.jsonl").read_bytes()
    assert joined["jsonl"] == {"sha256": lines.sha.hexdigest(), "bytes": lines.size}
    assert joined["chain"] == entry
    assert not (folder / evidence.PARTS).exists() or not any((folder / evidence.PARTS).iterdir())


def test_a_bundle_exported_in_segments_checks_out_and_holds_what_one_walk_writes(generated, tmp_path, monkeypatch):
    bundles = {}
    for mode in ("one walk", "segments"):
        joined = _walk(monkeypatch, mode, 400)
        monkeypatch.setattr(evidence, "WORKER_FROM", 10**9)  # the walk's coordinator is this process
        out = tmp_path / mode.replace(" ", "-")
        result = runner.invoke(app, ["--db", generated, "evidence", "export", "--from", "2026-01-01T00:00:00Z",
                                     "--to", "2026-02-15T00:00:00Z", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (len(joined) >= 2) == (mode == "segments")
        assert not (out / "events" / ".parts").exists()
        checked = runner.invoke(app, ["evidence", "verify", str(out)])
        assert checked.exit_code == 0 and checked.stdout.startswith("OK:"), checked.output
        alone = subprocess.run([sys.executable, "-I", str(out / "check_bundle.py"), str(out)], capture_output=True,
                               text=True, cwd=tmp_path)
        assert alone.returncode == 0, alone.stdout + alone.stderr
        bundles[mode] = out
    manifests = [json.loads((b / "manifest.json").read_text()) for b in bundles.values()]
    for name in ("events/events.jsonl", "events/chain.jsonl"):
        assert manifests[0]["files"][name] == manifests[1]["files"][name]
        assert (bundles["one walk"] / name).read_bytes() == (bundles["segments"] / name).read_bytes()
    assert manifests[0]["chain"] == manifests[1]["chain"]
    assert manifests[0]["ledger"]["verify"] == manifests[1]["ledger"]["verify"]
    assert sorted(manifests[0]["files"]) == sorted(manifests[1]["files"])


def test_a_segment_that_does_not_match_leaves_the_files_to_the_single_walk(generated, tmp_path, monkeypatch):
    """A changed event: the segmented walk fails, its joined files are removed, and the single walk (which
    names the first bad position) writes the period as stored, as an export without segments does."""
    with AccessLedger.open(generated) as led:
        head = led.head()
    bad = head * 3 // 4  # in a late segment: earlier ones are joined before the failure is seen
    before = _user_event(generated, bad)
    pos_col = "rowid" if "://" not in generated else "notification_id"
    _sql(generated, f"UPDATE stored_events SET state = ? WHERE {pos_col} = ?", (before.replace(b'"at"', b'"at" '), bad))
    written = {}
    for mode in ("one walk", "segments"):
        _walk(monkeypatch, mode, 300)
        folder = tmp_path / mode.replace(" ", "-")
        folder.mkdir()
        result = evidence._verify_and_write(generated, folder / "events.jsonl", 1, head)
        assert result["verify"]["ok"] is False and result["verify"]["first_bad_position"] == bad
        written[mode] = (result, {p.name: p.read_bytes() for p in folder.iterdir()})
    assert written["segments"] == written["one walk"]
    lines = written["segments"][1]["events.jsonl"].splitlines(keepends=True)
    assert len(lines) == head and lines[bad - 1] == before.replace(b'"at"', b'"at" ') + b"\n"


def test_a_segment_walker_stops_once_its_parent_is_gone(generated, monkeypatch):
    """The export's coordinator, killed (Ctrl-C ends it with SIGTERM), leaves no walker reading the log."""

    class Exited(Exception):
        pass

    def exit_(code: int) -> None:
        raise Exited(code)

    parents = itertools.chain([4242, 4242], itertools.repeat(1))  # at the start, the first batch, then gone
    monkeypatch.setattr(integrity.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(integrity.os, "_exit", exit_)
    seen: list[int] = []

    class Part:
        def take(self, rows: list) -> None:
            seen.append(rows[-1][0])

        def close(self) -> None:
            return None

    class Sink:
        def open(self, start: int, until: int, link: str) -> Part:
            return Part()

    with AccessLedger.open(generated) as led:
        head = led.head()
    with pytest.raises(Exited):
        integrity._walk_segment(generated, 1, head, GENESIS_LINK, {}, "", Sink())  # type: ignore[arg-type]
    assert seen == [integrity.WALK_BATCH]  # one batch handed over, then the walker stopped


def test_the_parts_of_a_failed_export_go_with_it(generated, tmp_path, monkeypatch):
    """An export that fails after the segments were joined leaves no part and no half bundle."""
    _walk(monkeypatch, "segments", 400)
    monkeypatch.setattr(evidence, "WORKER_FROM", 10**9)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    import reports.html

    monkeypatch.setattr(reports.html, "render_report", broken)
    out = tmp_path / "b"
    result = runner.invoke(app, ["--db", generated, "evidence", "export", "--out", str(out)])
    assert result.exit_code != 0
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
