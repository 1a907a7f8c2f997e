"""The leavers audit (SOC 2 CC6.2, ISO 27001 A.5.18): an HR terminations file reconciled with the ledger.

For each person HR says has left: when the account was deactivated, which grants it held at the
termination and when each was removed, what it read after the termination, and what is past the SLA.
The file is input, not ledger data: its rows are registered on the warehouse connection for the one
query only and never written into the warehouse file (whose bytes are hashed and bound to the chain).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import ValidationError
from reports.audits import SHARED_SQL, AuditResult, _instant, _plain, filter_findings, query_table, triage
from reports.errors import AuditParameterError
from reports.sql_files import sql_text

if TYPE_CHECKING:
    from reports.warehouse import Warehouse

NAME = "leavers"
TITLE = "Leavers"
DESCRIPTION = (
    "The people HR says have left, as the ledger knows them: when each account was deactivated, "
    "which grants it held at the termination and when each was removed, every secret read and "
    "allowed access after the termination, and deactivations later than the SLA."
)
SQL_FILE = "leavers.sql"
#: The columns a terminal table shows (csv, json, markdown show them all).
BRIEF = ("finding", "who", "what", "where", "since", "late_by", "positions")
MAX_HR_BYTES = 64 * 1024 * 1024
#: The name the HR rows are registered under on the connection, for the query only.
HR_TABLE = "hr_terminations"
PERSON = "person"
TIME_COLUMNS = ("terminated_at", "termination_time")
_TIME_FORMS = "give 2026-03-15T10:00:00Z, 2026-03-15T10:00 (UTC) or 2026-03-15"


@dataclass(frozen=True)
class Termination:
    line: int
    person: str  # user:NAME
    terminated_at: datetime  # naive UTC, as the warehouse keeps instants


@dataclass(frozen=True)
class HrFile:
    path: str
    sha256: str
    rows: tuple[Termination, ...]


def read_hr(path: str | Path) -> HrFile:
    """Read and check an HR terminations file: a CSV with a header naming `person` and `terminated_at`
    (or `termination_time`). Any fault is one ValidationError naming the file and the line."""
    return parse_hr(str(path), read_hr_bytes(path))


def read_hr_bytes(path: str | Path) -> bytes:
    """The bytes of an HR file, read once (bounded); a fault is one ValidationError naming the file."""
    name = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_HR_BYTES:
            raise ValidationError(f"{name}: larger than {MAX_HR_BYTES // (1024 * 1024)} MiB")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValidationError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ValidationError(f"{name}: is a folder, not a file") from None
    except OSError as exc:
        raise ValidationError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_HR_BYTES:  # (grown since its size was taken)
        raise ValidationError(f"{name}: larger than {MAX_HR_BYTES // (1024 * 1024)} MiB")
    return data


def parse_hr(name: str, data: bytes) -> HrFile:
    """Check the bytes of an HR terminations file (read_hr's rules), `name` naming it in every message and
    in the result; the SHA-256 is of exactly these bytes (the evidence export copies the same bytes)."""
    if len(data) > MAX_HR_BYTES:
        raise ValidationError(f"{name}: larger than {MAX_HR_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValidationError(f"{name} line {line}: not UTF-8") from None
    rows: list[Termination] = []
    first_line: dict[str, int] = {}
    columns: dict[str, int] | None = None
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    try:
        for cells in reader:
            line, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if columns is None:
                columns = _header(cells, f"{name} line {line}")
                continue
            if len(cells) != len(columns):
                raise ValidationError(f"{name} line {line}: {len(cells)} cell(s), the header names {len(columns)}")
            person = _person(cells[columns[PERSON]], f"{name} line {line}")
            if person in first_line:
                raise ValidationError(
                    f"{name} line {line}: {person} is given twice (first on line {first_line[person]})"
                )
            first_line[person] = line
            rows.append(Termination(line, person, _time(cells[columns["time"]], f"{name} line {line}")))
    except csv.Error as exc:
        raise ValidationError(f"{name} line {reader.line_num}: {exc}") from None
    if columns is None:
        raise ValidationError(
            f"{name} line 1: no header: the first line must name the columns person and terminated_at"
        )
    return HrFile(name, hashlib.sha256(data).hexdigest(), tuple(rows))


def _header(cells: list[str], where: str) -> dict[str, int]:
    """Column positions of `person` and the termination time ("time"), from the header row."""
    names = [c.strip().lower() for c in cells]
    known = (PERSON, *TIME_COLUMNS)
    if not any(n in known for n in names):
        raise ValidationError(
            f"{where}: no header: the first line must name the columns person and terminated_at "
            f"(it holds {', '.join(repr(c) for c in cells)})"
        )
    columns: dict[str, int] = {}
    for i, n in enumerate(names):
        if n not in known:
            raise ValidationError(
                f"{where}: unknown column {cells[i]!r} (the columns are person and terminated_at, or termination_time)"
            )
        key = "time" if n in TIME_COLUMNS else n
        if key in columns:
            raise ValidationError(
                f"{where}: the column {n} is given twice"
                if n in names[:i]
                else f"{where}: give terminated_at or termination_time, not both"
            )
        columns[key] = i
    for key, shown in ((PERSON, PERSON), ("time", "terminated_at")):
        if key not in columns:
            raise ValidationError(f"{where}: missing column {shown}")
    return columns


def _person(cell: str, where: str) -> str:
    """`user:NAME` from `user:NAME` or a bare NAME; a service account or team is no person HR lets go."""
    from ledger.vocabulary import check_name, nfkc, split_principal

    text = nfkc(cell.strip())
    try:
        if ":" not in text:
            return "user:" + check_name(text, "person")
        kind, name = split_principal(text, "person")
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    if kind != "user":
        raise ValidationError(
            f"{where}: person {cell.strip()!r} is a {kind.replace('_', ' ')}, not a person (give user:NAME or NAME)"
        )
    return f"user:{name}"


def _time(cell: str, where: str) -> datetime:
    """An instant from the file: ISO-8601, a date (midnight UTC), or a time without zone (UTC). The
    command line's words and offsets (now, -7d) are refused: a file's meaning must not depend on the day
    it is read."""
    from ledger.timeutil import cli_instant, parse_instant

    text = cell.strip()
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{where}: terminated_at {text!r} is not a time: {_TIME_FORMS}") from None
    try:
        return parse_instant(cli_instant(text, "terminated_at")).replace(tzinfo=None)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None


def sla_span(sla: str | timedelta) -> timedelta:
    """The SLA as a duration (the units of --window); AuditParameterError if it is not one."""
    if isinstance(sla, timedelta):
        if sla <= timedelta(0):
            raise AuditParameterError("sla: must be longer than zero")
        return sla
    from ledger.timeutil import parse_duration

    try:
        return parse_duration(sla, "sla")
    except ValidationError as exc:
        raise AuditParameterError(str(exc)) from None


def run_leavers(
    wh: Warehouse,
    hr_path: str | Path | HrFile,
    *,
    sla: str | timedelta = "24h",
    at: str | None = None,
    sync: bool = True,
    principal: str | None = None,
    tenant: str | None = None,
) -> AuditResult:
    """Run the leavers audit over the warehouse (syncing it first) for the people of an HR file (a path,
    or one read_hr has read); `at` defaults to now, `sla` to 24 hours; `principal`, `tenant`: keep only the
    rows about that person, or in that tenant (as every audit's filters)."""
    import duckdb
    import pyarrow as pa

    from reports.errors import WarehouseError

    hr = hr_path if isinstance(hr_path, HrFile) else read_hr(hr_path)
    span = sla_span(sla)
    at_dt = _instant(at, "at") or datetime.now(UTC).replace(tzinfo=None)
    if sync:
        wh.sync()
    statements = duckdb.extract_statements(sql_text(SQL_FILE))
    people = pa.table(
        {
            "line": pa.array([r.line for r in hr.rows], pa.int64()),
            "person": pa.array([r.person for r in hr.rows], pa.string()),
            "terminated_at": pa.array([r.terminated_at for r in hr.rows], pa.timestamp("us")),
        }
    )
    try:
        for statement in statements[:-1]:
            wh.con.execute(statement)
    except duckdb.Error as exc:
        raise WarehouseError(f"audit {NAME} failed: {str(exc).strip().splitlines()[0]}") from None
    wh.con.register(HR_TABLE, people)
    try:
        table = query_table(wh, NAME, statements[-1].query, {"at": at_dt, "sla": span})
    finally:
        wh.con.unregister(HR_TABLE)
    table = filter_findings(NAME, table, principal=principal, tenant=tenant)
    table, triaged = triage(wh, NAME, table, at_dt)
    wh.confirm()  # no result leaves before the file it was read from is proven (see Warehouse.confirm)
    shown = {
        "at": _plain(at_dt),
        "sla": sla if isinstance(sla, str) else f"{int(span.total_seconds())}s",
        "hr_file": hr.path,
        "hr_sha256": hr.sha256,
        "hr_rows": len(hr.rows),
    }
    shown.update({k: v for k, v in (("principal", principal), ("tenant", tenant)) if v is not None})
    return AuditResult(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        columns=list(table.column_names),
        sql={f: sql_text(f) for f in (SQL_FILE, SHARED_SQL)},
        params=shown,
        table=table,
        triaged=triaged,
    )
