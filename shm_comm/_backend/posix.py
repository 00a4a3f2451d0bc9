"""POSIX shared memory: Linux (``/dev/shm``, tested); macOS refused with a clear error.

The only module that makes OS calls about segments. Segments are files
in ``/dev/shm`` on Linux, opened with ``os.open`` rather than ``multiprocessing.shared_memory``
so that attaching never registers with the resource tracker (cpython issue 82300: the tracker
of a *subscriber* would unlink the publisher's segment when the subscriber exits).

Ownership: the creator holds an exclusive ``flock`` on its descriptor for the segment's whole
life. The kernel drops the lock when the creator dies, however it dies, so "is the owner
alive?" is answered by trying a shared lock: no guessing from pids that may be reused.

Record holders (subscribers, requesters, pullers) show that they live the same way: each
holds an exclusive byte-range lock on its own record, owned by its open file description
(``F_OFD_SETLK``, Linux >= 3.15), which the kernel drops when the last descriptor of that open
goes, however the process ends. Others probe it with ``F_OFD_GETLK``, which changes nothing.
Locks know nothing of pid namespaces and need no ``/proc``, so this holds in containers that
share ``/dev/shm`` but not pids. ``flock`` (the creator's) and these locks do not interact.
Where there are no OFD locks (macOS), ``RECORD_LOCKS`` is False and callers fall back to pids
(``pid_alive``), with the limits docs/design.md states.

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
import stat
import struct
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "MACOS_UNSUPPORTED",
    "RECORD_LOCKS",
    "SHM_DIR",
    "OpenSegment",
    "create_exclusive",
    "display_path",
    "is_owner_alive",
    "list_names",
    "lock_for_reclaim",
    "lock_range",
    "lstat",
    "open_segment",
    "pid_alive",
    "populate",
    "process_token",
    "range_locked",
    "remove_dead_temporaries",
    "same_file",
    "space",
    "uid_of",
    "unlink",
    "unlock_range",
    "user_name",
]

# SHM_COMM_DIR points shm_comm at another tmpfs (tests use a small one to fill it up).
SHM_DIR = os.environ.get("SHM_COMM_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


def _path(name: str) -> str:
    assert SHM_DIR is not None
    return os.path.join(SHM_DIR, name)


# Opening an existing segment never follows a symbolic link and never blocks on a FIFO
# (shm_open, on macOS, has no links or FIFOs to guard against and takes neither flag).
_EXISTING = os.O_NOFOLLOW | os.O_NONBLOCK if SHM_DIR is not None else 0

# macOS refuses flock() on POSIX shared-memory descriptors (ENOTSUP: they are not files), and
# a publisher's liveness is an flock on its segment, so channels cannot work there yet.
MACOS_UNSUPPORTED = (
    "shm_comm cannot create or open channels on macOS yet: macOS refuses flock() on POSIX "
    "shared memory, and shm_comm uses that lock to know whether a publisher is alive. Run "
    "it on Linux (on a Mac, in a Linux container or VM); see docs/design.md, Portability"
)


def _open_fd(name: str, flags: int) -> int:
    if SHM_DIR is not None:
        return os.open(_path(name), flags | os.O_CLOEXEC, 0o600)
    if sys.platform == "darwin":
        raise OSError(errno.ENOTSUP, MACOS_UNSUPPORTED)
    # No /dev/shm: the call multiprocessing uses, minus the resource tracker.
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


def remove_dead_temporaries(name: str = "",
                            wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Remove half-built segments (``.NAME.PID.RANDOM.tmp``) whose creator died mid-creation.

    Only names starting with ``.`` + ``name`` are considered (and, with ``wanted``, only
    those for which ``wanted(NAME)`` is true), only our own (same uid, regular
    files), and only if no process holds the creator's ``flock`` (taken right after the file
    is created) and the pid in the name is gone or the file is older than ``TEMP_GRACE``
    seconds: a creator in another pid namespace has a pid that means nothing here. Returns
    the names removed.
    """
    if SHM_DIR is None:
        return []
    removed = []
    for entry in os.listdir(SHM_DIR):
        if not (entry.startswith("." + name) and entry.endswith(".tmp")):
            continue
        parts = entry.rsplit(".", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        if wanted is not None and not wanted(parts[0][1:]):
            continue
        try:
            fd = _open_fd(entry, os.O_RDONLY | _EXISTING)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                    or is_owner_alive(fd)):
                continue
            if pid_alive(int(parts[1])) and time.time() - st.st_mtime < TEMP_GRACE:
                continue
            if same_file(fd, entry) and unlink(entry):
                removed.append(entry)
        finally:
            os.close(fd)
    return removed


TEMP_GRACE = 10.0


def _setup(fd: int, size: int, initialize: Callable[[mmap.mmap], None], mode: int,
           name: str) -> tuple[int, mmap.mmap]:
    # The liveness lock first, so that nobody takes the half-built file for a dead one's.
    lock_fd = _open_fd(name, os.O_RDWR | _EXISTING)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, mode)
        _reserve(fd, size)
        mapping = mmap.mmap(fd, size)
        try:
            populate(mapping, write=True)
            initialize(mapping)
        except BaseException:
            mapping.close()
            raise
    except BaseException:
        os.close(lock_fd)
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
    fd = _open_fd(name, flags | _EXISTING)
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


# --- record locks: open-file-description byte-range locks (Linux >= 3.15) ---------------------

_FLOCK = struct.Struct("@hhqqi")  # struct flock: l_type, l_whence, l_start, l_len, l_pid


def _probe_record_locks() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(fcntl, "F_OFD_GETLK"):
        return False
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
    except OSError:  # EINVAL: a kernel older than 3.15
        return False
    finally:
        os.close(fd)
    return True


RECORD_LOCKS = _probe_record_locks()
"""Whether record holders prove they live with OFD locks (else: by pid, see pid_alive)."""


def lock_range(fd: int, start: int, length: int) -> bool:
    """Lock bytes ``[start, start + length)`` of ``fd``'s file for ``fd``'s open file
    description (exclusive, without waiting); False if another one holds a lock on them.

    Needs a descriptor opened for writing. The lock lasts until :func:`unlock_range` or
    until the last descriptor of this open is closed (the process exit closes them all).
    """
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                    _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def unlock_range(fd: int, start: int, length: int) -> None:
    """Release this open file description's lock on bytes ``[start, start + length)``."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, start, length, 0))


def range_locked(fd: int, start: int, length: int) -> bool:
    """Whether another open file description holds a lock on any of these bytes.

    ``F_OFD_GETLK``: changes nothing, works on a read-only descriptor. Locks of ``fd``'s own
    open file description do not count.
    """
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK,
                      _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    return bool(_FLOCK.unpack(got)[0] != fcntl.F_UNLCK)


# --- pids: information for people, and liveness where there are no record locks -----------

def _stat_fields(pid: int) -> list[bytes]:
    """The fields after the command name in the kernel's ``stat`` of ``pid`` (OSError if gone).

    Read from ``/proc/PID/task/PID/stat`` (the main thread, the same values) rather than
    ``/proc/PID/stat``: qemu-user answers a process's reads of its own ``/proc/PID/stat``
    itself, with a start time a few ticks off the kernel's, so under emulation a subscriber's
    token would never match what its publisher reads, and live subscribers would be reaped.
    """
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def process_token(pid: int) -> int:
    """A number that changes when ``pid`` is reused: the start time on Linux, else 0."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return int(_stat_fields(pid)[19])
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
            fields = _stat_fields(pid)
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


def space() -> tuple[int, int] | None:
    """``(total, free)`` bytes of the file system that holds segments (``/dev/shm``), as
    ``df`` counts them; None where segments are not files (macOS)."""
    if SHM_DIR is None:
        return None
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
