"""What every output file shares: owner-only modes whatever the umask, no password written, and
CSV cells a spreadsheet cannot take for a formula.

The ledger's files are owner-only; a file that holds the same facts (an export, an audit, a
digest, an evidence bundle) is too: files 0600, folders 0700.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
FOLDER_MODE = 0o700


@contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile (by this process, DuckDB's COPY included) are owner-only."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def open_private(path: str | Path) -> IO[bytes]:
    """Open `path` for writing (created or truncated), owner-only even if it existed with wider modes."""
    import stat

    if os.path.islink(path):
        # A link planted where an output goes must not overwrite the file it names; /dev/stdout (a link to
        # a terminal or a pipe) is still a fine --out. Opened without O_CREAT or O_TRUNC, then checked.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
        except FileNotFoundError:
            raise OSError(errno.ELOOP, "a symbolic link to nothing: refusing to write through it", str(path)) from None
        if stat.S_ISREG(os.fstat(fd).st_mode) or stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ELOOP, "a symbolic link to a file: refusing to write through it", str(path))
        return os.fdopen(fd, "wb")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not a terminal or pipe named as --out
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def write_private(path: str | Path, data: bytes | str) -> None:
    with open_private(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def make_private(root: str | Path) -> None:
    """Owner-only modes on a file, or on a folder and everything under it (symlinks are left alone)."""
    root = Path(root)
    if not root.is_dir():
        os.chmod(root, FILE_MODE)
        return
    os.chmod(root, FOLDER_MODE)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            p = os.path.join(folder, d)
            if not os.path.islink(p):
                os.chmod(p, FOLDER_MODE)
        for f in files:
            p = os.path.join(folder, f)
            if not os.path.islink(p):
                os.chmod(p, FILE_MODE)


# scheme://user:password@host -> scheme://user:***@host; password=... / PGPASSWORD=... -> ***
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):(?P<secret>[^\s/@]*)@")
_PARAM_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:password|passwd|pgpassword|sslpassword)=)(?P<secret>[^\s&;'\"]*)")


def scrub(text: str) -> str:
    """`text` (a command line, a URL, a message) with every password in a URL or a password=... replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)
    return _PARAM_PASSWORD.sub(lambda m: f"{m['head']}***", text)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text (OWASP): a leading ' before =, +, -, @, tab or CR,
    except for a number such as -5 or -0.25."""
    if text.startswith(_FORMULA_START) and not (text.startswith("-") and _is_number(text)):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower().lstrip("-") not in ("inf", "infinity", "nan")


def csv_safe_sql(q: str) -> str:
    """The same rule as csv_safe, as a DuckDB SQL expression over the text expression `q` (cheap on
    millions of cells: one comparison of the first character for nearly all of them)."""
    number = f"(TRY_CAST({q} AS DOUBLE) IS NOT NULL AND {q} = trim({q}) AND NOT regexp_matches(lower({q}), 'inf|nan'))"
    return (
        f"CASE WHEN left({q}, 1) IN ('=', '+', '@', chr(9), chr(13)) OR (left({q}, 1) = '-' AND NOT {number}) "
        f"THEN '''' || {q} ELSE {q} END"
    )
