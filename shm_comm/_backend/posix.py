"""POSIX shared memory: Linux (``/dev/shm``, tested) and macOS (``shm_open``, untested here).

The only module besides ``windows.py`` that makes OS calls about segments. Segments are files
in ``/dev/shm`` on Linux, opened with ``os.open`` rather than ``multiprocessing.shared_memory``
so that attaching never registers with the resource tracker (cpython issue 82300: the tracker
of a *subscriber* would unlink the publisher's segment when the subscriber exits).

Ownership: the creator holds an exclusive ``flock`` on its descriptor for the segment's whole
life. The kernel drops the lock when the creator dies, however it dies, so "is the owner
alive?" is answered by trying a shared lock: no guessing from pids that may be reused.

Existing segments are opened without following symbolic links (``O_NOFOLLOW``) and without
blocking on a FIFO (``O_NONBLOCK``), and ``open_segment`` returns the ``fstat`` of the very
descriptor it opened, so callers judge who owns what they map, not what a name pointed at a
moment earlier.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import mmap
import os
import pwd
import secrets
import sys
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "SHM_DIR",
    "OpenSegment",
    "create_exclusive",
    "display_path",
    "is_owner_alive",
    "list_names",
    "lock_for_reclaim",
    "lstat",
    "open_segment",
    "pid_alive",
    "populate",
    "process_token",
    "remove_dead_temporaries",
    "same_file",
    "uid_of",
    "unlink",
    "user_name",
]

# SHM_COMM_DIR points shm_comm at another tmpfs (tests use a small one to fill it up).
SHM_DIR = os.environ.get("SHM_COMM_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


def _path(name: str) -> str:
    assert SHM_DIR is not None
    return os.path.join(SHM_DIR, name)


# Opening an existing segment never follows a symbolic link and never blocks on a FIFO.
_EXISTING = os.O_NOFOLLOW | os.O_NONBLOCK


def _open_fd(name: str, flags: int) -> int:
    if SHM_DIR is not None:
        return os.open(_path(name), flags | os.O_CLOEXEC, 0o600)
    # macOS: no /dev/shm; the call multiprocessing uses, minus the resource tracker.
    import _posixshmem  # type: ignore[import-not-found]

    return int(_posixshmem.shm_open("/" + name, flags, mode=0o600))


def _reserve(fd: int, size: int) -> None:
    """Make the segment ``size`` bytes with every page backed now, not at first write.

    tmpfs overcommits: after a bare ftruncate, a full /dev/shm turns the first write to an
    untouched page into SIGBUS. posix_fallocate fails here, with ENOSPC, instead.
    """
    if hasattr(os, "posix_fallocate") and SHM_DIR is not None:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    os.ftruncate(fd, size)


def create_exclusive(name: str, size: int, initialize: Callable[[mmap.mmap], None],
                     mode: int = 0o600) -> tuple[int, mmap.mmap]:
    """Create segment ``name`` of ``size`` bytes, owner-only, locked, initialised, then visible.

    ``initialize`` fills the mapping before any other process can open the name: on Linux the
    segment is built under a temporary name and hard-linked into place, which fails if the
    name exists. Raises ``FileExistsError`` if it does, ``OSError`` (ENOSPC...) otherwise.

    The returned descriptor holds the owner's liveness lock. It is a separate open of the
    file from the one the mapping uses (``mmap`` keeps a private duplicate of its descriptor),
    so closing it in a ``fork()``ed child really lets go of the lock there.
    """
    if SHM_DIR is None:
        fd = _open_fd(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        try:
            return _setup(fd, size, initialize, mode, name)
        except BaseException:
            unlink(name)
            raise
        finally:
            os.close(fd)
    remove_dead_temporaries(name)
    temp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = _open_fd(temp, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    try:
        lock_fd, mapping = _setup(fd, size, initialize, mode, temp)
        try:
            os.link(_path(temp), _path(name))
        except BaseException:
            mapping.close()
            os.close(lock_fd)
            raise
        return lock_fd, mapping
    finally:
        os.close(fd)
        unlink(temp)


def remove_dead_temporaries(name: str = "") -> list[str]:
    """Remove half-built segments (``.NAME.PID.RANDOM.tmp``) whose creator died mid-creation.

    Only names starting with ``.`` + ``name`` are considered, and only if the pid in the name
    is not alive. Returns the names removed.
    """
    if SHM_DIR is None:
        return []
    removed = []
    for entry in os.listdir(SHM_DIR):
        if not (entry.startswith("." + name) and entry.endswith(".tmp")):
            continue
        parts = entry.rsplit(".", 3)
        if len(parts) != 4 or not parts[1].isdigit() or pid_alive(int(parts[1])):
            continue
        if unlink(entry):
            removed.append(entry)
    return removed


def _setup(fd: int, size: int, initialize: Callable[[mmap.mmap], None], mode: int,
           name: str) -> tuple[int, mmap.mmap]:
    os.fchmod(fd, mode)
    _reserve(fd, size)
    mapping = mmap.mmap(fd, size)
    try:
        populate(mapping, write=True)
        initialize(mapping)
        lock_fd = _open_fd(name, os.O_RDWR)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(lock_fd)
            raise
    except BaseException:
        mapping.close()
        raise
    return lock_fd, mapping


class OpenSegment(NamedTuple):
    """An existing segment, opened and mapped (see :func:`open_segment`)."""

    fd: int
    mapping: mmap.mmap
    size: int
    stat: os.stat_result


def open_segment(name: str, readonly: bool = False,
                 check: Callable[[os.stat_result], None] | None = None) -> OpenSegment:
    """Open and map an existing segment.

    ``check`` is called with the ``fstat`` of the opened descriptor before anything is mapped
    or read; whatever it raises propagates (the descriptor is closed). Raises
    ``FileNotFoundError`` if there is no such segment, ``PermissionError`` if the mode does
    not let us open it, ``OSError`` with ``errno.ELOOP`` if the name is a symbolic link, and
    ``ValueError`` if the segment is empty.

    The returned ``fd`` is its own open file description, apart from the one the mapping
    keeps: locks taken on ``fd`` (record locks, the owner probe) are released by closing it,
    also in a ``fork()``ed child that still holds the mapping.
    """
    flags = os.O_RDONLY if readonly else os.O_RDWR
    fd = _open_fd(name, flags | (_EXISTING if SHM_DIR is not None else 0))
    try:
        st = os.fstat(fd)
        if check is not None:
            check(st)
        size = st.st_size
        if size == 0:
            raise ValueError("segment is empty")
        access = mmap.ACCESS_READ if readonly else mmap.ACCESS_WRITE
        if SHM_DIR is None:
            return OpenSegment(fd, mmap.mmap(fd, size, access=access), size, st)
        map_fd = _open_fd(name, flags | _EXISTING)
        try:
            again = os.fstat(map_fd)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                raise FileNotFoundError(errno.ENOENT, "segment was replaced while opening it",
                                        name)
            return OpenSegment(fd, mmap.mmap(map_fd, size, access=access), size, st)
        finally:
            os.close(map_fd)
    except BaseException:
        os.close(fd)
        raise


def lstat(name: str) -> os.stat_result | None:
    """What sits at ``name`` itself (a link is not followed); None if nothing, or unknown
    (platforms without a file system view of segments). For messages, not for decisions."""
    if SHM_DIR is None:
        return None
    try:
        return os.lstat(_path(name))
    except OSError:
        return None


def display_path(name: str) -> str:
    """How a person finds segment ``name``: its path in /dev/shm, else its shm name."""
    return _path(name) if SHM_DIR is not None else "/" + name


@functools.lru_cache(maxsize=64)
def user_name(uid: int) -> str | None:
    """The login name of ``uid``, or None if this system has no name for it (cached)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def uid_of(user: str) -> int:
    """The uid of login name ``user``; ``ValueError`` if there is no such user."""
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"no user named {user!r} on this system") from None


def is_owner_alive(fd: int) -> bool:
    """Whether the process that created the segment behind ``fd`` still holds its lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def lock_for_reclaim(fd: int) -> bool:
    """Take the dead owner's place on a stale segment; False if somebody holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def same_file(fd: int, name: str) -> bool:
    """Whether ``name`` still refers to the segment open as ``fd`` (not replaced, not gone)."""
    try:
        if SHM_DIR is None:
            return True
        st = os.lstat(_path(name))  # a symbolic link to our segment is not our segment
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def unlink(name: str) -> bool:
    """Remove segment ``name``; False if it did not exist."""
    try:
        if SHM_DIR is not None:
            os.unlink(_path(name))
        else:
            import _posixshmem

            _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def list_names(prefix: str) -> list[str]:
    """Names of the segments starting with ``prefix`` (Linux only; macOS cannot list them)."""
    if SHM_DIR is None:
        return []
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def process_token(pid: int) -> int:
    """A number that changes when ``pid`` is reused: the start time on Linux, else 0."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def pid_alive(pid: int, token: int = 0) -> bool:
    """Whether process ``pid`` (started at ``token``, if known) is alive and not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return False
        if fields[0] in (b"Z", b"X"):
            return False
        if token and int(fields[19]) != token:
            return False
    return True


# madvise() advice of Linux >= 5.14, which Python 3.11's mmap module does not name.
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23


def populate(mapping: mmap.mmap, write: bool) -> bool:
    """Map every page of ``mapping`` now, so that no message pays for it; False if it could not.

    A fresh mapping of a shared-memory file has no page-table entries: the first write into
    each 4 KiB page (the first one also zero-fills it: ``posix_fallocate`` on tmpfs only
    reserves) and, in every other process, the first read of it faults, 1-2 µs a page, so
    the first 16 MiB message into each buffer cost several times a later one. Linux >= 5.14
    maps the whole range in one ``madvise`` (``MADV_POPULATE_WRITE`` for the creator, which
    also zero-fills, ``MADV_POPULATE_READ`` for the others); older kernels and macOS read one
    byte of every page, which maps it as well. Best effort: a failure only leaves the faults
    to the first messages, as before.
    """
    if sys.platform.startswith("linux"):
        try:
            mapping.madvise(MADV_POPULATE_WRITE if write else MADV_POPULATE_READ)
            return True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a kernel older than 5.14
                return False
    try:
        with memoryview(mapping) as view, view[::mmap.PAGESIZE] as pages:
            pages.tobytes()
    except (OSError, ValueError):
        return False
    return True
