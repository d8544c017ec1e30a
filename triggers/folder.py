"""The watched folder as a boundary: which names count, and touching files without leaving it.

Anyone who can write to the folder chooses the names in it, so a name is data: it is never
parsed as a path, never followed through a symlink, never handed to a shell. Every file is
reached from a descriptor of the folder itself, one component at a time with ``O_NOFOLLOW``:
a sub-folder swapped for a symlink between the event and the read (``sub -> /etc``) makes the
open fail instead of reading, deleting or moving a file outside. The same holds for the
``move:<dir>`` target, which may itself sit inside the folder where anyone can plant a link.

Runs in worker threads (``asyncio.to_thread``): plain blocking calls, no loop state.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Names writers use while a file is incomplete; they never fire (matched on every path part).
TEMP_PATTERNS: tuple[str, ...] = (
    ".*",
    "~*",
    "*~",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.swp",
    "*.swx",
)
NAME_MAX = 255  #: bytes in one name on Linux file systems
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class Escape(OSError):
    """A folder on the path is a symlink or not a folder: the path leaves the watched folder."""


@dataclass(frozen=True, slots=True)
class Filters:
    """S3 filter rules (prefix, suffix), a glob, temp names, the move target, and sub-folders."""

    root: Path
    recursive: bool = False
    prefix: str | None = None
    suffix: str | None = None
    glob: str | None = None
    ignore: tuple[str, ...] = TEMP_PATTERNS
    move_dir: Path | None = None

    def wanted(self, rel: str) -> bool:
        parts = rel.split("/")
        if not self.recursive and len(parts) > 1:
            return False
        if self._ignored(parts) or self.in_move_dir(rel):
            return False
        if self.prefix and not rel.startswith(self.prefix):
            return False
        if self.suffix and not rel.endswith(self.suffix):
            return False
        return not (self.glob and not fnmatch.fnmatchcase(rel, self.glob))

    def skip_dir(self, rel: str) -> bool:
        return self._ignored(rel.split("/")) or self.in_move_dir(rel)

    def in_move_dir(self, rel: str) -> bool:
        if self.move_dir is None:
            return False
        full = self.root / rel
        return full == self.move_dir or self.move_dir in full.parents

    def _ignored(self, parts: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in self.ignore)


def open_dir(root: Path, parts: list[str], *, create: bool = False) -> int:
    """A descriptor of ``root/parts...``, reached without following a symlink below ``root``.

    ``root`` itself may be a symlink (the user configured it); nothing under it is followed.
    Raises :class:`Escape` when a component is a symlink or not a folder,
    ``FileNotFoundError`` when one is missing (and ``create`` is false).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if not _is_name(part):
                raise Escape(errno.EXDEV, f"path part {part!r} is not a name")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Escape(exc.errno, "a folder on the path is a symlink (not followed)") from exc
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_parent(root: Path, rel: str) -> tuple[int, str]:
    """The descriptor of ``rel``'s folder (see :func:`open_dir`) and ``rel``'s last name."""
    *dirs, name = rel.split("/")
    if not _is_name(name):
        raise Escape(errno.EXDEV, f"name {name!r} is not a file name")
    return open_dir(root, dirs), name


def _is_name(part: str) -> bool:
    """One path part that names an entry of its folder (a NUL cannot reach the kernel: not a name)."""
    return part not in ("", ".", "..") and "\0" not in part


def walk(
    root: Path, filters: Filters, refuse: Callable[[str, str], None]
) -> Iterator[tuple[str, tuple[int, int]]]:
    """``(rel, (size, mtime_ns))`` of every wanted regular file; others are passed to ``refuse``."""
    yield from _walk(root, "", filters, refuse)


def _walk(
    root: Path, sub: str, filters: Filters, refuse: Callable[[str, str], None]
) -> Iterator[tuple[str, tuple[int, int]]]:
    try:
        fd = open_dir(root, sub.split("/") if sub else [])
    except OSError as exc:
        refuse(sub or ".", f"cannot be listed: {exc.strerror or exc}")
        return
    try:
        entries = list(os.scandir(fd))
        found: list[tuple[str, os.stat_result]] = []
        for entry in entries:
            with contextlib.suppress(OSError):
                found.append((entry.name, os.stat(entry.name, dir_fd=fd, follow_symlinks=False)))
    except OSError as exc:
        refuse(sub or ".", f"cannot be listed: {exc.strerror or exc}")
        return
    finally:
        os.close(fd)
    for name, st in found:
        rel = f"{sub}/{name}" if sub else name
        if stat.S_ISDIR(st.st_mode):
            if filters.recursive and not filters.skip_dir(rel):
                yield from _walk(root, rel, filters, refuse)
        elif filters.wanted(rel):
            if stat.S_ISREG(st.st_mode):
                yield rel, (st.st_size, st.st_mtime_ns)
            else:
                refuse(rel, "symlink (not followed)" if stat.S_ISLNK(st.st_mode) else "not a regular file")


def fit_name(stem: str, tag: str, suffix: str) -> str:
    """``stem.tag.suffix`` shortened (the stem first) to fit in one file name of NAME_MAX bytes."""
    tail = os.fsencode(f".{tag}{suffix}")
    if len(tail) > NAME_MAX // 2:  # a hostile suffix: keep the tag, drop the suffix
        tail = os.fsencode(f".{tag}")
    room = NAME_MAX - len(tail)
    head = os.fsencode(stem)[:room]
    return os.fsdecode(head + tail)


def delete(root: Path, rel: str, size: int, mtime_ns: int) -> bool:
    """Delete ``rel`` if it is still that version; ``False`` when it changed (nothing done)."""
    parent, name = open_parent(root, rel)
    try:
        if not _same(parent, name, size, mtime_ns):
            return False
        os.unlink(name, dir_fd=parent)
        return True
    finally:
        os.close(parent)


def move(root: Path, rel: str, size: int, mtime_ns: int, move_dir: Path, tag: Callable[[], str]) -> bool:
    """Move ``rel`` to ``move_dir/rel`` if it is still that version; never overwrite, never leave.

    A name already taken in ``move_dir`` gets ``.<tag()>`` before its suffix (the second
    ``a.csv`` becomes ``a.<sequencer>.csv``), shortened to fit a file name.
    """
    parent, name = open_parent(root, rel)
    try:
        if not _same(parent, name, size, mtime_ns):
            return False
        *dirs, _ = rel.split("/")
        if move_dir == root or root in move_dir.parents:  # inside the folder: reached like any file
            base, dirs = root, [*move_dir.relative_to(root).parts, *dirs]
        else:
            base = move_dir
        target = open_dir(base, dirs, create=True)
        try:
            dest = name
            if _exists(target, dest):
                path = Path(name)
                dest = fit_name(path.stem, tag(), path.suffix)
            try:
                os.rename(name, dest, src_dir_fd=parent, dst_dir_fd=target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_then_unlink(parent, name, target, dest)
            return True
        finally:
            os.close(target)
    finally:
        os.close(parent)


def _same(parent: int, name: str, size: int, mtime_ns: int) -> bool:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime_ns)


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _copy_then_unlink(src_dir: int, name: str, dst_dir: int, dest: str) -> None:
    """``move_dir`` on another file system: copy through descriptors, then remove the source."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        dst = os.open(
            dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dst_dir
        )
        with os.fdopen(src, "rb", closefd=False) as fin, os.fdopen(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
            fout.flush()
            st = os.fstat(src)
            os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))  # as a rename keeps them
    finally:
        os.close(src)
    os.unlink(name, dir_fd=src_dir)
