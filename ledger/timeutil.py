"""Instants: always UTC, always with a time zone, one canonical text form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ledger.errors import ValidationError

MIN_YEAR = 1970
MAX_YEAR = 9999
_DURATION = re.compile(r"^(\d+)(s|min|m|h|d|w|mo|y)$")
#: A month is 30 days and a year 365 days: a window or an offset is a span of time, not a calendar step.
_UNITS = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days", "w": "weeks", "mo": "days", "y": "days"}
_PER_UNIT = {"mo": 30, "y": 365}
_OFFSET = re.compile(r"^([+-])(\d+[a-z]+)$")
_PERIOD = re.compile(r"^(\d{4})(?:-(?:(\d{2})|[Qq]([1-4])))?$")
#: Said once in the help of every time option of the command line.
CLI_TIME_HELP = (
    "ISO-8601, a time without zone being UTC; or a date (midnight UTC), now, today, yesterday, "
    "or an offset from now such as -7d, +30d, -12h, -30min, -2w"
)
#: The same, short, for an option beside one that says it in full (--to beside --from).
CLI_TIME_HELP_AGAIN = "the forms --from takes, UTC when no zone"
_NOT_A_TIME = (
    "is not a time: give 2026-03-15T10:00:00Z, 2026-03-15T10:00 (UTC), 2026-03-15, now, today, yesterday or -7d"
)
#: The longest duration accepted: more than the span of the years allowed, less than datetime's range.
MAX_DURATION = timedelta(days=365 * 1000)
#: Canonical text of an instant in the years MIN_YEAR to MAX_YEAR - 1 (9999 is outside, as parse_instant says).
_CANONICAL = re.compile(r"^(19[7-9]\d|[2-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def parse_instant(text: str, what: str = "at") -> datetime:
    """Parse ISO-8601 with a time zone into an aware UTC datetime."""
    if isinstance(text, datetime):
        value = text
    else:
        if not isinstance(text, str) or not text or len(text) > 64:
            raise ValidationError(f"{what}: {text!r} is not an ISO-8601 time")
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(f"{what}: {text!r} is not an ISO-8601 time") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{what}: {text!r} has no time zone (add Z or +00:00)")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC, 0001-01-01T00:00:00+01:00 in year 0:
        # neither has a datetime, and both are outside the range anyway.
        value = None
    if value is None or not MIN_YEAR <= value.year <= MAX_YEAR - 1:
        raise ValidationError(f"{what}: {text!r} is outside the years {MIN_YEAR}-{MAX_YEAR - 1}")
    return value


def format_instant(value: datetime) -> str:
    """The canonical text of an instant: `2026-03-01T12:00:00Z`, microseconds only when present."""
    value = value.astimezone(UTC)
    if value.year >= 1000:  # isoformat gives the same text (microseconds only when present) in a tenth of the time
        return value.replace(tzinfo=None).isoformat() + "Z"
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(text: str, what: str = "at") -> str:
    """Validate and normalise an instant given as text."""
    if isinstance(text, str) and _CANONICAL.match(text) and not text.endswith(".000000Z"):
        try:
            datetime.fromisoformat(text)  # the calendar check (no 30 February)
        except ValueError:
            raise ValidationError(f"{what}: {text!r} is not an ISO-8601 time") from None
        return text
    return format_instant(parse_instant(text, what))


def now() -> datetime:
    return datetime.now(UTC)


def parse_duration(text: str, what: str = "window") -> timedelta:
    """Parse `90d`, `12h`, `2w`, `30min`, `45s`, `3mo` (30 days each), `1y` (365 days); a bare `m` is refused."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ValidationError(f"{what}: {text!r} is not a duration like 90d, 12h, 2w, 30min, 3mo or 1y")
    count, unit = int(match.group(1)), match.group(2)
    if unit == "m":
        # 3m read as 3 minutes once made every principal look dormant; 3 months was meant.
        raise ValidationError(f"{what}: {text!r} is ambiguous: say {count}min (minutes) or {count}mo (months)")
    try:
        duration = timedelta(**{_UNITS[unit]: count * _PER_UNIT.get(unit, 1)})
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        # Longer than any two instants of the ledger can be apart: subtracting it from one would overflow.
        raise ValidationError(f"{what}: {text!r} is longer than {MAX_DURATION.days // 365} years")
    return duration


def cli_instant(text: str, what: str = "at") -> str:
    """An instant as people type it on the command line, in canonical form.

    A full ISO-8601 time with a zone; a date (midnight UTC); a time without zone
    (`2026-03-15T10:00`, `2026-03-15 10:00:30`: UTC); `now`, `today`, `yesterday` (midnight UTC);
    an offset from now (`-7d`, `+30d`, `-12h`, `-30min`, `-2w`). Never for JSONL events, which stay
    strict (`canonical`).
    """
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise ValidationError(f"{what}: {text!r} {_NOT_A_TIME}")
    word = text.strip().lower()
    current = now()
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"now": current, "today": midnight, "yesterday": midnight - timedelta(days=1)}
    offset = _OFFSET.match(word)
    if word in named:
        value = named[word]
    elif offset:
        try:
            span = parse_duration(offset.group(2), what)
        except ValidationError as exc:
            raise ValidationError(str(exc).replace(repr(offset.group(2)), repr(text), 1)) from None
        try:
            value = current + span if offset.group(1) == "+" else current - span
        except OverflowError:
            raise ValidationError(f"{what}: {text!r} is outside the years {MIN_YEAR}-{MAX_YEAR - 1}") from None
    else:
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValidationError(f"{what}: {text!r} {_NOT_A_TIME}") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    try:
        return format_instant(parse_instant(value, what))
    except ValidationError:  # an aware datetime fails only on the years
        raise ValidationError(f"{what}: {text!r} is outside the years {MIN_YEAR}-{MAX_YEAR - 1}") from None


def parse_period(text: str, what: str = "period") -> tuple[str, str]:
    """A named period, `2026`, `2026-03` or `2026-Q1`, as (first instant, last instant), both inclusive."""
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    year = int(match.group(1)) if match else 0
    if not match or not MIN_YEAR <= year <= MAX_YEAR - 2:
        raise ValidationError(f"{what}: {text!r} is not a period like 2026, 2026-03 or 2026-Q1")
    month, quarter = match.group(2), match.group(3)
    if month is not None and not 1 <= int(month) <= 12:
        raise ValidationError(f"{what}: {text!r} has no month {month}")
    first_month, months = (int(month), 1) if month else ((int(quarter) - 1) * 3 + 1, 3) if quarter else (1, 12)
    start = datetime(year, first_month, 1, tzinfo=UTC)
    following = first_month + months - 1  # months after January of `year`
    end = datetime(year + following // 12, following % 12 + 1, 1, tzinfo=UTC)
    # The periods' ends are inclusive (--to is): the last microsecond before the next period.
    return format_instant(start), format_instant(end - timedelta(microseconds=1))
