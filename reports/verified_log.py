"""The change events an evidence export's log walk verified, read like a ledger (reports/evidence.py).

The review audit, the review records and the point-in-time Timeline they fold read the log through
the few methods below; given this instead of the ledger, they read the bytes the export's own walk
verified in the same run, never the ledger file a second time (which may have been swapped since).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from ledger.events import USAGE_TYPES, decode

#: The first bytes of a usage event's canonical line (the type is always its first field).
USAGE_PREFIXES = tuple(b'{"type":"%s"' % t.encode() for t in sorted(USAGE_TYPES))


class VerifiedLog:
    """Positions 1..head: the change events kept in memory as verified, times from the export's warehouse."""

    def __init__(self, head: int) -> None:
        self._head = head
        self.positions: list[int] = []
        self.lines: list[bytes] = []
        self.con: Any = None  # the export's own warehouse connection (set once it is filled)

    def take(self, first: int, lines: Any) -> None:
        """Keep the change events among `lines` (an Arrow binary array, verified, positions first, first + 1, ...)."""
        import pyarrow.compute as pc

        usage = pc.equal(pc.binary_length(lines), 0)  # (an empty line is no event)
        for prefix in USAGE_PREFIXES:
            usage = pc.or_(usage, pc.starts_with(lines, prefix))
        kept = pc.indices_nonzero(pc.invert(usage))
        self.positions.extend(pc.add(kept, first).to_pylist())
        self.lines.extend(lines.take(kept).to_pylist())

    def head(self) -> int:
        return self._head

    def read_changes_raw(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, canonical bytes) of the change events start..stop (inclusive), in position order."""
        last = self._head if stop is None else min(stop, self._head)
        lo, hi = bisect_left(self.positions, start), bisect_right(self.positions, last)
        return zip(self.positions[lo:hi], self.lines[lo:hi])

    def read_changes(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        for pos, line in self.read_changes_raw(start, stop):
            yield pos, decode(line)

    def time_of(self, position: int) -> str | None:
        from ledger.timeutil import format_instant

        if not 1 <= position <= self._head or self.con is None:
            return None
        rows = self.con.execute('SELECT "at" FROM events WHERE position = ?', [position]).fetchall()
        return format_instant(rows[0][0].replace(tzinfo=UTC)) if rows else None
