"""Ctrl-C (issue #17, item 5): one line saying what was written, exit 130, no traceback, from the
command and from its worker processes; an interrupted demo is replaced by the next one.

Each command runs as the installed entry point in its own process group, and SIGINT goes to the
whole group, as a terminal sends it: the import's parser processes get it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from access_ledger.demo.generator import generate
from ledger.app import AccessLedger

EXE = shutil.which("access-ledger") or os.path.join(os.path.dirname(sys.executable), "access-ledger")
END = "2026-03-31T00:00:00Z"


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [EXE, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "ACCESS_LEDGER_ACTOR": "system"},
    )


def _writing(path: Path) -> bool:
    """True while another connection holds the ledger's write lock (a write transaction is open).

    Probed only once the ledger has its write-ahead log: a probe while the command is still creating
    the file (switching it to WAL, which wants the database to itself) made that command fail with
    "locked" instead of being interrupted."""
    if not path.exists() or not Path(f"{path}-wal").exists():
        return False
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        con.close()


def _interrupt_when(proc: subprocess.Popen, ready, then: float = 0.0, timeout: float = 120) -> tuple[str, str]:
    """Send SIGINT to the command's process group once `ready()` (then `then` seconds later)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended before it was interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "the command never reached the point to interrupt"
        time.sleep(0.02)
    time.sleep(then)
    assert proc.poll() is None, "the command ended before it was interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return out, err


def _one_line(err: str) -> str:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.strip()


def test_ctrl_c_during_an_import_writes_nothing_and_says_so(tmp_path):
    lines = [line.rstrip(b"\n") + b"\n" for line in generate("small").lines()]
    (tmp_path / "head.jsonl").write_bytes(b"".join(lines[:100]))
    rest = tmp_path / "rest.jsonl"
    rest.write_bytes(b"".join(lines[100:]))
    assert rest.stat().st_size > 4_000_000  # big enough for the parser processes (see cli/write.py)
    db = tmp_path / "ledger.db"
    assert subprocess.run([EXE, "--db", str(db), "import", "head.jsonl"], cwd=tmp_path).returncode == 0

    proc = _start("--db", str(db), "import", str(rest), cwd=tmp_path)
    _, err = _interrupt_when(proc, lambda: _writing(db), then=0.3)

    assert proc.returncode == 130
    assert _one_line(err) == "interrupted: nothing was written"
    with AccessLedger.open(str(db)) as led:
        assert led.head() == 100 and led.verify().ok
    again = subprocess.run([EXE, "--db", str(db), "import", str(rest)], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"imported {len(lines) - 100} events")


def test_ctrl_c_during_the_large_demo_leaves_nothing_and_no_worker_traceback(tmp_path):
    db = tmp_path / "demo.db"
    proc = _start("--db", str(db), "demo", "--size", "large", "--evidence", "ev", "--end", END, cwd=tmp_path)
    # Well into the import: its parser processes (a ForkServer pool) are at work.
    _, err = _interrupt_when(proc, lambda: _writing(db), then=2.0)

    assert proc.returncode == 130
    assert _one_line(err) == "interrupted: nothing was written; run the demo again"
    assert sorted(os.listdir(tmp_path)) == []  # the empty ledger this run made is gone too


def test_an_interrupted_demo_is_replaced_by_the_next(tmp_path):
    db = tmp_path / "demo.db"
    proc = _start("--db", str(db), "demo", "--evidence", "ev", "--end", END, cwd=tmp_path)
    # The ledger is written once its warehouse appears: interrupt the evidence export.
    _, err = _interrupt_when(proc, lambda: (tmp_path / "demo.db.duckdb").exists(), then=0.2)

    assert proc.returncode == 130
    line = _one_line(err)
    assert line.startswith(f"interrupted: the demo ledger {db} was written (") and "bundle was not" in line
    assert not (tmp_path / "ev").exists() or not any((tmp_path / "ev").iterdir())

    again = _start("--db", str(db), "demo", "--evidence", "ev", "--end", END, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (tmp_path / "ev" / "manifest.json").is_file()


@pytest.mark.parametrize("leftover", ["empty ledger", "unfinished bundle"])
def test_the_demo_replaces_what_a_killed_demo_left(tmp_path, leftover):
    """SIGKILL leaves no chance to clean up: the next demo still knows its own leftovers."""
    db = tmp_path / "demo.db"
    if leftover == "empty ledger":
        AccessLedger.open(str(db), create=True).close()
    else:
        (tmp_path / "ev" / "audits").mkdir(parents=True)
        (tmp_path / "ev" / "digest.json").write_text("{}")
    done = subprocess.run(
        [EXE, "--db", str(db), "demo", "--evidence", "ev", "--end", END],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


SLOW_SEGMENTS = """
import os, time
import ledger.integrity as integrity
import reports.evidence as evidence

# A small ledger exported as a large one is: the log walk in a worker process, in segments walked by
# processes of its own; each segment waits, so that Ctrl-C comes while they are all alive.
integrity.PARALLEL_FROM, integrity.SEGMENT_MIN, evidence.WORKER_FROM = 100, 500, 100
walk = integrity._walk_segment


def _walk_segment(*args, **kwargs):
    open(os.environ["SEGMENT_STARTED"], "w").close()
    time.sleep(60)
    return walk(*args, **kwargs)


integrity._walk_segment = _walk_segment
"""


def _interrupted_export(tmp_path, size: dict[str, int], patch_code: str, flag: str) -> tuple[subprocess.Popen, str]:
    """An evidence export of a generated ledger of `size`, run with `patch_code` as its sitecustomize, sent Ctrl-C
    once the file named by the environment variable `flag` exists: the process and its stderr."""
    db = tmp_path / "ledger.db"
    with AccessLedger.open(str(db), create=True) as led:
        led.import_lines(generate("large", datetime(2026, 3, 31, tzinfo=UTC), **size).lines())
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(patch_code)
    marker = tmp_path / flag.lower()
    env = {**os.environ, "ACCESS_LEDGER_ACTOR": "system", "PYTHONPATH": str(patch), flag: str(marker)}
    proc = subprocess.Popen(
        [EXE, "--db", str(db), "evidence", "export", "--out", str(tmp_path / "ev")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    _, err = _interrupt_when(proc, marker.exists, then=0.5)
    return proc, err


def test_ctrl_c_during_a_segmented_evidence_export_prints_one_line(tmp_path):
    """#24 item 12: no multiprocessing "leaked semaphore objects" warning after the one line."""
    size = {"events": 3_000, "users": 20, "tenants": 3, "roles": 8, "assignments": 80, "days": 60}
    proc, err = _interrupted_export(tmp_path, size, SLOW_SEGMENTS, "SEGMENT_STARTED")

    assert proc.returncode == 130
    assert _one_line(err) == "interrupted: nothing was written"
    assert not (tmp_path / "ev").exists()


SLOW_START = """
import os, sys, time

# The export's worker process (spawned: "--multiprocessing-fork") takes its time to start.
if "--multiprocessing-fork" in sys.argv:
    open(os.environ["WORKER_STARTING"], "w").close()
    time.sleep(5)
else:
    import reports.evidence as evidence

    evidence.WORKER_FROM = 100
"""


def test_ctrl_c_while_the_exports_worker_starts_prints_one_line(tmp_path):
    """A worker process still starting (before it can ignore Ctrl-C) prints no traceback of its own."""
    size = {"events": 1_000, "users": 10, "tenants": 2, "roles": 4, "assignments": 30, "days": 30}
    proc, err = _interrupted_export(tmp_path, size, SLOW_START, "WORKER_STARTING")

    assert proc.returncode == 130
    assert _one_line(err) == "interrupted: nothing was written"
