"""Safe read access to an evidence bundle, folder or zip, for `evidence verify` (DESIGN section 7).

A bundle comes from whoever exported it, so it is read as hostile input:
- only regular files: in a folder every path component is opened with O_NOFOLLOW (no symlink is
  followed), O_NONBLOCK (a FIFO cannot block the open) and checked with fstat before a byte is read;
  in a zip a member marked as a symlink or device is refused;
- every read is bounded: a member is read at most to the size the manifest gives it (plus one
  byte, to see that it is longer), the manifest itself to MANIFEST_LIMIT, and hashes are streamed;
- zip members have unique, relative, normalised names (no `../`, no absolute name, no backslash,
  no duplicate, no file that is also a folder of another member), are not encrypted, and a bad
  CRC or corrupt data is reported against the member.

Every problem is a `BundleProblem` (or a line in the list `read_member` returns), naming the member.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from reports.errors import ReportError

MANIFEST = "manifest.json"
MANIFEST_LIMIT = 16 << 20  # 16 MiB: a manifest is a few hundred kB even for a 10M-event year
CHUNK = 1 << 20


class BundleError(ReportError):
    """An evidence bundle cannot be written or read (not a bundle, no manifest, folder not empty)."""


class BundleProblem(BundleError):
    """A bundle that is not what it claims (unsafe names, a manifest too large or malformed...): exit 1."""


def check_name(name: str) -> str | None:
    """Why a member name is unsafe, or None: relative, normalised, posix, no `..`."""
    if not name or "\\" in name or "\x00" in name:
        return "not a plain relative name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute name"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "a name leading outside the bundle (..)"
    if any(p in ("", ".") for p in parts):
        return "not a normalised name"
    return None


class BundleReader:
    """Read access to a bundle by posix relative name; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._root: int | None = None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise BundleError(f"no bundle at {self.path}") from None
        if stat.S_ISDIR(st.st_mode):
            self._root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        elif stat.S_ISREG(st.st_mode):
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
                raise BundleProblem(f"{self.path} is neither a bundle folder nor a readable zip file") from None
            self._index()
        else:
            raise BundleProblem(f"{self.path} is neither a bundle folder nor a zip file (not a regular file)")

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
        if self._root is not None:
            os.close(self._root)
            self._root = None

    # -- zip ------------------------------------------------------------------------------------

    def _index(self) -> None:
        assert self.zip is not None
        folders: set[str] = set()
        for info in self.zip.infolist():
            name = info.filename
            why = check_name(name.rstrip("/") if info.is_dir() else name)
            if why:
                raise BundleProblem(f"{self.path}: member {name!r} is {why}")
            if info.is_dir():
                folders.add(name.rstrip("/"))
                continue
            if name in self._infos:
                raise BundleProblem(f"{self.path}: member {name!r} appears more than once")
            self._infos[name] = info
            parents = PurePosixPath(name).parents
            folders.update(str(p) for p in parents if str(p) != ".")
        for name in self._infos:
            if name in folders:
                raise BundleProblem(f"{self.path}: member {name!r} is both a file and a folder")

    # -- both -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every member that is not a folder (symlinks, FIFOs and devices in a folder included), sorted."""
        if self.zip is not None:
            return sorted(self._infos)
        out: list[str] = []
        todo = [(str(self.path), "")]  # no recursion: a hostile folder may nest deeper than Python's stack
        while todo:
            folder, prefix = todo.pop()
            with os.scandir(folder) as entries:
                for e in entries:
                    rel = prefix + e.name
                    if e.is_dir(follow_symlinks=False):
                        todo.append((e.path, rel + "/"))
                    else:
                        out.append(rel)
        return sorted(out)

    def has(self, name: str) -> bool:
        if self.zip is not None:
            return name in self._infos
        return name in set(self.names())

    def size(self, name: str) -> int:
        """The member's size as its container states it (zip header, or fstat of a regular file)."""
        if self.zip is not None:
            return self._info(name).file_size
        with self._open_file(name) as f:
            return os.fstat(f.fileno()).st_size

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._infos.get(name)
        if info is None:
            raise BundleProblem(f"{self.path}: no member {name!r}")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG):
            raise BundleProblem(f"{name}: not a regular file (a zip member marked as a symlink or special file)")
        if info.flag_bits & 0x1:
            raise BundleProblem(f"{name}: an encrypted member")
        return info

    def _open_file(self, name: str) -> IO[bytes]:
        """Open a folder member: no symlink anywhere on its path, a regular file only, never blocking."""
        why = check_name(name)
        if why:
            raise BundleProblem(f"{name}: {why}")
        assert self._root is not None
        parts = name.split("/")
        fd = self._root
        opened: list[int] = []
        try:
            for part in parts[:-1]:
                try:
                    fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise self._refusal(name, exc) from None
                opened.append(fd)
            try:
                leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                raise self._refusal(name, exc) from None
        finally:
            for d in opened:
                os.close(d)
        st = os.fstat(leaf)
        if not stat.S_ISREG(st.st_mode):
            os.close(leaf)
            raise BundleProblem(f"{name}: not a regular file ({_kind(st.st_mode)})")
        os.set_blocking(leaf, True)
        return os.fdopen(leaf, "rb")

    @staticmethod
    def _refusal(name: str, exc: OSError) -> BundleError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return BundleProblem(f"{name}: not a regular file (a symlink on its path)")
        if exc.errno == errno.ENOENT:
            return BundleError(f"no member {name!r}")
        return BundleProblem(f"{name}: cannot be read ({exc.strerror or exc})")

    def stream(self, name: str, limit: int) -> Iterator[bytes]:
        """The member's bytes in chunks; BundleProblem as soon as it is longer than `limit`, is not
        a regular file, is encrypted, or its data is corrupt (bad CRC)."""
        if self.zip is not None:
            info = self._info(name)
            if info.file_size > limit:
                raise BundleProblem(f"{name}: {info.file_size:,} bytes, more than the {limit:,} expected")
            try:
                with self.zip.open(info) as f:
                    yield from _bounded(f, name, limit)
            except (
                zipfile.BadZipFile,
                zlib.error,
                EOFError,
                NotImplementedError,
                RuntimeError,
                OSError,
                ValueError,
                struct.error,
            ) as exc:
                raise BundleProblem(f"{name}: unreadable zip member ({_first_line(exc)})") from None
            return
        with self._open_file(name) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise BundleProblem(f"{name}: {size:,} bytes, more than the {limit:,} expected")
            yield from _bounded(f, name, limit)

    def read(self, name: str, limit: int) -> bytes:
        return b"".join(self.stream(name, limit))

    def sha256(self, name: str, limit: int) -> tuple[str, int]:
        """(hex SHA-256, size) of a member read to at most `limit` bytes."""
        h = hashlib.sha256()
        size = 0
        for chunk in self.stream(name, limit):
            h.update(chunk)
            size += len(chunk)
        return h.hexdigest(), size


def _bounded(f: IO[bytes], name: str, limit: int) -> Iterator[bytes]:
    seen = 0
    while chunk := f.read(min(CHUNK, limit + 1 - seen)):
        seen += len(chunk)
        if seen > limit:
            raise BundleProblem(f"{name}: longer than the {limit:,} bytes expected")
        yield chunk


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
