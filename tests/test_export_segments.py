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
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trust import _sql, _user_event
from typer.testing import CliRunner

import ledger.integrity as integrity
from access_ledger.cli import app
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from ledger.store import GENESIS_LINK
from reports import evidence

runner = CliRunner()
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_runs = itertools.count()


@pytest.fixture
def generated(ledger_url: str) -> str:
    with AccessLedger.open(ledger_url, create=True) as led:
        led.import_lines(
            generate("large", END, events=3_000, users=20, tenants=3, roles=8, assignments=100, days=60).lines()
        )
    return ledger_url


def _walk(monkeypatch: pytest.MonkeyPatch, mode: str, segment_min: int = 1) -> list[int]:
    """Make verify walk the log once, or in segments in two worker processes; the list fills with the
    start of every segment joined by the export, and 0 once the joined files are used."""
    monkeypatch.setattr(integrity, "PARALLEL_FROM", 1 if mode == "segments" else 10**12)
    monkeypatch.setattr(integrity, "SEGMENT_MIN", segment_min)
    monkeypatch.setattr(integrity.os, "cpu_count", lambda: 2)
    joined: list[int] = []
    collect = evidence._Parts.collect

    def spy(self: evidence._Parts, start: int, until: int, result: dict) -> None:
        joined.append(start)
        collect(self, start, until, result)

    monkeypatch.setattr(evidence._Parts, "collect", spy)
    finish = evidence._Parts.finish

    def used(self: evidence._Parts) -> dict:
        joined.append(0)  # 0: the joined files were used
        return finish(self)

    monkeypatch.setattr(evidence._Parts, "finish", used)
    return joined


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_segments_write_exactly_what_one_walk_writes(generated, tmp_path, monkeypatch, data):
    with AccessLedger.open(generated) as led:
        head = led.head()
        first = data.draw(st.integers(1, head), label="first")
        last = data.draw(st.integers(first - 1, head), label="last")  # first - 1: a period without events
        stored = b"".join(state + b"\n" for _, state in led.read_bytes(first, last))
        before = b"".join(state + b"\n" for _, state in led.read_bytes(1, first - 1)) if first > 1 else b""
    segment_min = data.draw(st.sampled_from([1, 500, 1_000, head // 2]), label="segment_min")
    written = {}
    for mode in ("one walk", "segments"):
        joined = _walk(monkeypatch, mode, segment_min)
        folder = tmp_path / f"{mode}-{next(_runs)}"
        folder.mkdir()
        result = evidence._verify_and_write(generated, folder / "events.jsonl", first, last)
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert sorted(files) == [evidence.HISTORY_FILE, "chain.jsonl", "events.jsonl"]  # no part left behind
        assert joined[-1:] == ([0] if mode == "segments" else []) and len(joined) >= (3 if mode == "segments" else 0)
        assert result["verify"]["ok"] is True and result["verify"]["events"] == head
        assert files["events.jsonl"] == stored
        assert files[evidence.HISTORY_FILE] == before  # the history the export's own warehouse is filled with
        assert result["history"] == {"sha256": hashlib.sha256(before).hexdigest(), "bytes": len(before)}
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
    rows = [
        (
            p,
            f"{p:032x}",
            1 + p % 3,
            "ledger.events:UserCreated",
            b'{"type":"UserCreated","at":"%d"}' % p,
            f"{p:064x}",
            str(p),
        )
        for p in range(1, n + 1)
    ]
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
        part.take(rows[a - 1 : b])
        results[a] = (b, part.close())
    for a in data.draw(st.permutations(list(results)), label="finishing order"):
        parts.collect(a, results[a][0], results[a][1])
    assert parts.complete(n)
    joined = parts.finish()
    parts.discard()
    assert (folder / "events.jsonl").read_bytes() == (one / "events.jsonl").read_bytes()
    assert (folder / "chain.jsonl").read_bytes() == (one / "chain.jsonl").read_bytes()
    assert joined["jsonl"] == {"sha256": lines.sha.hexdigest(), "bytes": lines.size}
    before = b"".join(r[4] + b"\n" for r in rows[: first - 1])
    assert (folder / evidence.HISTORY_FILE).read_bytes() == before
    assert joined["history"] == {"sha256": hashlib.sha256(before).hexdigest(), "bytes": len(before)}
    assert joined["chain"] == entry
    assert not (folder / evidence.PARTS).exists() or not any((folder / evidence.PARTS).iterdir())


def test_a_bundle_exported_in_segments_checks_out_and_holds_what_one_walk_writes(generated, tmp_path, monkeypatch):
    bundles = {}
    for mode in ("one walk", "segments"):
        joined = _walk(monkeypatch, mode, 400)
        monkeypatch.setattr(evidence, "WORKER_FROM", 10**9)  # the walk's coordinator is this process
        out = tmp_path / mode.replace(" ", "-")
        result = runner.invoke(
            app,
            [
                "--db",
                generated,
                "evidence",
                "export",
                "--from",
                "2026-01-01T00:00:00Z",
                "--to",
                "2026-02-15T00:00:00Z",
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        assert joined[-1:] == ([0] if mode == "segments" else []) and len(joined) >= (3 if mode == "segments" else 0)
        assert not (out / "events" / ".parts").exists()
        checked = runner.invoke(app, ["evidence", "verify", str(out)])
        assert checked.exit_code == 0 and checked.stdout.startswith("OK:"), checked.output
        alone = subprocess.run(
            [sys.executable, "-I", str(out / "check_bundle.py"), str(out)], capture_output=True, text=True, cwd=tmp_path
        )
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
        folder = tmp_path / mode.replace(" ", "-")
        folder.mkdir()
        joined = _walk(monkeypatch, mode, 300)
        result = evidence._verify_and_write(generated, folder / "events.jsonl", 1, head)
        assert 0 not in joined  # the one walk wrote the files
        assert result["verify"]["ok"] is False and result["verify"]["first_bad_position"] == bad
        written[mode] = (result, {p.name: p.read_bytes() for p in folder.iterdir()})
    assert written["segments"] == written["one walk"]
    lines = written["segments"][1]["events.jsonl"].splitlines(keepends=True)
    assert len(lines) == head and lines[bad - 1] == before.replace(b'"at"', b'"at" ') + b"\n"


class _Editing:
    """Before the first worker reads the log, edit it: event `p` rewritten and the chain links p..b recomputed
    to match, after verify's own transaction read the links the segments start from. Each segment then
    matches the log it reads; only the seam at `b` shows the two states."""

    def __init__(self, url: str, p: int, b: int, marker: str):
        self.url, self.p, self.b, self.marker = url, p, b, marker

    def once(self) -> None:
        """In each worker, before it reads: the first one edits, the others wait for the edit."""
        import os
        import time

        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            while not os.path.exists(self.marker + ".done"):  # the other worker is editing
                time.sleep(0.05)
            return
        self._edit()
        open(self.marker + ".done", "w").close()

    def _edit(self) -> None:
        import orjson

        from ledger.integrity import next_link

        pos_col = "rowid" if "://" not in self.url else "notification_id"
        oid = "originator_id" if "://" not in self.url else "replace(CAST(originator_id AS TEXT), '-', '')"
        link = _sql(self.url, "SELECT link FROM al_chain WHERE position = ?", (self.p - 1,))[0][0]
        rows = _sql(
            self.url,
            f"SELECT {pos_col}, {oid}, originator_version, topic, state FROM stored_events "
            f"WHERE {pos_col} BETWEEN ? AND ? ORDER BY {pos_col}",
            (self.p, self.b),
        )
        for pos, stream, version, topic, state in rows:
            state = bytes(state)
            if pos == self.p:
                state = orjson.dumps({**orjson.loads(state), "reason": "rewritten"})
                _sql(self.url, f"UPDATE stored_events SET state = ? WHERE {pos_col} = ?", (state, pos))
            link = next_link(link, pos, str(stream).replace("-", ""), int(version), topic, state)
            _sql(self.url, "UPDATE al_chain SET link = ? WHERE position = ?", (link, pos))


class _EditingParts(evidence._Parts):
    """The export's parts, made by workers that first see the log edited (_Editing)."""

    def __init__(self, folder: Path, first: int, last: int, editing: _Editing):
        super().__init__(folder, first, last)
        self.editing = editing

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "editing": self.editing}

    def open(self, start: int, until: int, link: str) -> evidence._Part:
        self.editing.once()
        return super().open(start, until, link)


def test_segments_that_read_the_log_in_two_states_are_not_used(generated, tmp_path, monkeypatch):
    """Each segment is read in a transaction of its own. A log edited between the reads (here: after the
    start links were read, before the walkers read) must not pass because each segment matches the state
    it read: the seam between two segments is checked against the links the walk started them from, and
    the files come from the one walk, in one transaction."""
    joined = _walk(monkeypatch, "segments", 1_000)  # segments 1-1,000, 1,001-2,000, ...
    with AccessLedger.open(generated) as led:
        head = led.head()
        assert head > 2_000
    original = _user_event(generated, 900)
    editing = _Editing(generated, 900, 1_000, str(tmp_path / "edited"))
    monkeypatch.setattr(evidence, "_Parts", lambda folder, first, last: _EditingParts(folder, first, last, editing))
    result = evidence._verify_and_write(generated, tmp_path / "events.jsonl", 1, head)
    assert (tmp_path / "edited.done").exists() and _user_event(generated, 900) != original
    assert 0 not in joined  # the segments' files were not used
    line = (tmp_path / "events.jsonl").read_bytes().splitlines(keepends=True)[899]
    if result["verify"]["ok"]:
        assert line == original + b"\n"  # SQLite: the one walk read the log as it was when verify began
    else:  # PostgreSQL (read committed): the one walk read the edit, and position 1,001 no longer chains
        assert result["verify"]["first_bad_position"] == 1_001 and line != original + b"\n"


class _Exited(Exception):
    pass


class _Recorder:
    """A Segments sink that records the batches its part is given."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.opened = 0

    def open(self, start: int, until: int, link: str) -> _Recorder:
        self.opened += 1
        return self

    def take(self, rows: list) -> None:
        self.seen.append(rows[-1][0])

    def close(self) -> None:
        return None


@pytest.mark.parametrize("gone_after", [0, 2], ids=["gone-before-it-starts", "gone-after-a-batch"])
def test_a_segment_walker_stops_once_its_parent_is_gone(generated, monkeypatch, gone_after):
    """The export's coordinator, killed (Ctrl-C ends it with SIGTERM), leaves no walker reading the log:
    where the kernel does not end the walker with its parent (ledger.pipeline.bound_to), it stops at its
    start or at its next batch."""

    def exit_(code: int) -> None:
        raise _Exited(code)

    parents = itertools.chain(itertools.repeat(4242, gone_after), itertools.repeat(1))
    monkeypatch.setattr(integrity.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(integrity.os, "_exit", exit_)
    sink = _Recorder()
    with AccessLedger.open(generated) as led:
        head = led.head()
    with pytest.raises(_Exited):
        integrity._walk_segment(generated, 1, head, GENESIS_LINK, {}, "", sink, 4242)  # type: ignore[arg-type]
    assert sink.seen == ([] if gone_after == 0 else [integrity.WALK_BATCH])
    assert sink.opened == (0 if gone_after == 0 else 1)


def test_a_killed_coordinator_takes_its_walkers_with_it(generated, tmp_path):
    """SIGKILL to the process that runs a segmented walk: its walker processes end too, the one still
    walking and the one waiting for work (which no check of its own would end)."""
    import os
    import signal
    import time

    script = tmp_path / "coordinator.py"
    script.write_text(
        "import sys, time\n"
        "import ledger.integrity as integrity\n"
        "from ledger.app import AccessLedger\n"
        "class Slow:\n"  # the first segment is walked at once (its walker then idles), the second slowly
        "    def open(self, start, until, link):\n"
        "        self.start = start\n"
        "        return self\n"
        "    def take(self, rows):\n"
        "        time.sleep(0.5 if self.start > 1 else 0)\n"
        "    def close(self):\n"
        "        return None\n"
        "    def collect(self, start, until, result):\n"
        "        print('joined', start, flush=True)\n"
        "    def discard(self):\n"
        "        pass\n"
        "if __name__ == '__main__':\n"
        "    integrity.PARALLEL_FROM, integrity.SEGMENT_MIN = 1, 1_600\n"  # two segments
        "    with AccessLedger.open(sys.argv[1]) as led:\n"
        "        led.verify(workers=2, derived=False, segments=Slow())\n"
    )
    coordinator = subprocess.Popen([sys.executable, str(script), generated], stdout=subprocess.PIPE, text=True)
    try:
        assert coordinator.stdout is not None
        assert coordinator.stdout.readline() == "joined 1\n"  # one walker idle now, the other walking slowly
        walkers = [p for p in _children(coordinator.pid) if "spawn_main" in _command(p)]
        assert len(walkers) == 2, walkers
        os.kill(coordinator.pid, signal.SIGKILL)
        coordinator.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in walkers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in walkers), "a walker outlived its coordinator"
    finally:
        coordinator.kill()
        coordinator.wait()


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


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
