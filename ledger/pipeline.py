"""Parse JSONL in a worker process while the main process validates rules and writes.

Parsing (pydantic validation and canonical encoding) is a pure function of a line, so it can
run beside the writer. Chunks come back in file order, so the first bad line is reported
exactly as a sequential import would report it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

import orjson

from ledger import errors as E
from ledger.events import encode, parse_json

CHUNK = 20000
IN_FLIGHT = 3


def parse_chunk(first_lineno: int, lines: list[bytes]) -> tuple[list[bytes], tuple[int, str, str] | None]:
    """Canonical bytes of each line (b'' for a blank one), stopping at the first bad line."""
    out: list[bytes] = []
    for i, line in enumerate(lines):
        if not line.strip():
            out.append(b"")
            continue
        try:
            out.append(encode(parse_json(line)))
        except E.LedgerError as exc:
            return out, (first_lineno + i, type(exc).__name__, str(exc))
    return out, None


def _watch_importer(importer: int) -> None:
    """In a worker: exit as soon as the importing process is gone (even if it was SIGKILLed), and
    leave Ctrl-C to the importer (the terminal sends it to every process of the group)."""
    import threading
    import time

    ignore_interrupts()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(importer, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # a process of another user took the pid: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="importer-watch", daemon=True).start()


def ignore_interrupts() -> None:
    """In a worker process: ignore Ctrl-C; the main process stops the work and says so, in one line."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def bound_to(parent: int) -> None:
    """In a worker process started by process `parent`: ignore Ctrl-C (see ignore_interrupts), and end
    when that process ends, however it ends (killed, or SIGTERM from the process above it): on Linux
    the kernel kills the worker then (PR_SET_PDEATHSIG), even one idle between tasks; a worker whose
    parent is already gone ends at once."""
    import signal
    import sys

    ignore_interrupts()
    if sys.platform == "linux":
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


@contextmanager
def children_deaf_to_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C from their first instruction: SIGINT is blocked in this
    thread meanwhile, and the mask is inherited across fork and exec (bound_to then ignores it for good).
    A Ctrl-C meanwhile is not lost: it reaches this process when the block ends."""
    import signal

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if it is not running yet) with its standard error on
    /dev/null. A worker ended on Ctrl-C (SIGTERM from its parent, or SIGKILL once the parent is gone)
    cannot release the semaphores of the pool it runs itself; the tracker releases them when the
    command ends, and would say so in a warning after the command's one line."""
    from multiprocessing import resource_tracker

    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(quiet, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the fork server with Ctrl-C ignored: an ignored signal stays ignored across exec, so a Ctrl-C
    while it is still importing (before its own handlers are set) cannot print its traceback; the workers
    forked from it ignore Ctrl-C too, and the importer alone says what happened (in one line)."""
    import signal
    from multiprocessing import forkserver

    # Its standard error (and its workers') is /dev/null: a worker still starting when the importer stops
    # on Ctrl-C fails to unpickle what the importer already removed, and would print that. Every error
    # of a working parser comes back through its future (one line from the importer), and a worker that
    # dies is a BrokenProcessPool, said in one line too.
    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        os.dup2(quiet, 2)
        forkserver.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
        if main:
            signal.signal(signal.SIGINT, previous)


def default_workers() -> int:
    return max(1, min(3, (os.cpu_count() or 1) - 1))


def parse_parallel(
    lines: Iterable[bytes | str], progress: Callable[[int], None] | None, workers: int
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Chunks of (line number, canonical event) for the non-blank lines, parsed by `workers` processes."""
    loads = orjson.loads
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ledger.events"])
    _start_forkserver_deaf_to_ctrl_c()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_watch_importer, initargs=(os.getpid(),)
    ) as pool:
        pending: deque[tuple[int, Future]] = deque()
        lineno = 1
        chunk: list[bytes] = []

        def submit() -> None:
            nonlocal lineno, chunk
            pending.append((lineno, pool.submit(parse_chunk, lineno, chunk)))
            lineno += len(chunk)
            chunk = []

        def drain_one() -> Iterator[list[tuple[int, dict[str, Any]]]]:
            first, future = pending.popleft()
            try:
                parsed, error = future.result()
            except BrokenProcessPool:
                raise E.LedgerError("the import's parser process died (out of memory?): nothing was written") from None
            out = []
            for i, data in enumerate(parsed):
                if data:
                    event = loads(data)
                    event["\0state"] = data  # the canonical bytes, so the writer need not encode again
                    out.append((first + i, event))
            if out:
                yield out
            if error is not None:
                n, kind, message = error
                raise getattr(E, kind, E.ValidationError)(f"line {n}: {message}")

        try:
            for line in lines:
                if progress is not None:
                    progress(len(line) + 1)
                chunk.append(line if isinstance(line, bytes) else line.encode())
                if len(chunk) >= CHUNK:
                    submit()
                    if len(pending) >= IN_FLIGHT:
                        yield from drain_one()
            if chunk:
                submit()
            while pending:
                yield from drain_one()
        finally:
            for _, future in pending:
                future.cancel()
