"""Instants: always UTC, always with a time zone, one canonical text form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ledger.errors import ValidationError

MIN_YEAR = 1970
MAX_YEAR = 9999
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
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
    """Parse `90d`, `12h`, `2w`, `30m`, `45s`."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ValidationError(f"{what}: {text!r} is not a duration like 90d, 12h or 2w")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        # Longer than any two instants of the ledger can be apart: subtracting it from one would overflow.
        raise ValidationError(f"{what}: {text!r} is longer than {MAX_DURATION.days // 365} years")
    return duration
