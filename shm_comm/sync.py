"""A process-safe named lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows).

``FileLock("jobs")`` and ``named_lock("jobs")`` are shm-comm 1.0's API: processes that use
the same name exclude each other. The operating system releases the lock when its holder
dies, so a crashed process never leaves it locked.

Where the lock file lives: a plain name such as ``"jobs"`` becomes ``jobs.lock`` in a
directory private to the user, ``<tempdir>/shm_comm-<uid>`` (mode 0700), so another user can
neither hold your lock nor plant a file or link in its place. A path (a ``pathlib.Path``, or a
string that is absolute or contains a path separator) is used as the lock file itself, for a
lock shared with whoever can open that file. (1.0 put every name, slashes turned into ``_``,
in the shared temporary directory.)
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import SHMError, SHMTimeoutError

__all__ = ["FileLock", "lock_path", "named_lock"]


def lock_path(name: str | os.PathLike[str]) -> str:
    """The file that :class:`FileLock` locks for ``name`` (see the module docstring).

    Raises :class:`SHMError` if the private lock directory exists but is not this user's
    (someone else created it) and ``ValueError`` for an empty name.
    """
    path = os.fspath(name)
    if not isinstance(name, str) or os.path.isabs(path) or os.sep in path or (
            os.altsep is not None and os.altsep in path):
        return path
    if not name:
        raise ValueError("lock name is empty")
    return os.path.join(_lock_dir(), f"{name}.lock")


def _lock_dir() -> str:
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: the temp directory is already per user
        return tempfile.gettempdir()
    uid = getuid()
    path = os.path.join(tempfile.gettempdir(), f"shm_comm-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise SHMError(
            f"lock directory {path} is not a private directory of this user (uid {uid}); "
            "remove it, or lock a path of your own: FileLock(pathlib.Path(...))"
        )
    return path


class FileLock:
    """An exclusive lock shared by processes, by name; usable as a context manager.

    ``FileLock(name, timeout=None)``: ``acquire()`` waits at most ``timeout`` seconds (the
    constructor's by default; None: no limit) and raises :class:`SHMTimeoutError` when it
    runs out. Not reentrant: acquiring twice through one instance raises ``RuntimeError``.
    """

    def __init__(self, name: str | os.PathLike[str], timeout: float | None = None) -> None:
        self.name = name
        self.path = lock_path(name)
        self.timeout = timeout
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this instance holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (default: the constructor's)."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this FileLock")
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        delay = 0.0005
        try:
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise SHMTimeoutError(f"could not lock {self.path} within {timeout} s")
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock(fd)
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<FileLock {self.path} {'held' if self.locked else 'free'}>"


@contextmanager
def named_lock(name: str | os.PathLike[str], timeout: float | None = None) -> Iterator[FileLock]:
    """Hold :class:`FileLock` ``name`` for the ``with`` block (1.0's helper).

    Waits at most ``timeout`` seconds (None: no limit), then raises :class:`SHMTimeoutError`.
    """
    lock = FileLock(name, timeout=timeout)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


if sys.platform == "win32":  # pragma: no cover - not tested on this project's CI
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
