"""A process-safe file lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows).

The operating system releases the lock when its holder dies, so a crashed process never
leaves it locked.
"""

from __future__ import annotations

import os
import sys
import time

from .errors import SHMTimeoutError

__all__ = ["FileLock"]


class FileLock:
    """An exclusive lock on ``path`` shared by processes; usable as a context manager.

    ``acquire(timeout)`` waits at most ``timeout`` seconds (None: no limit) and raises
    :class:`SHMTimeoutError` when it runs out. Not reentrant; one holder per instance.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 10.0) -> None:
        self.path = os.fspath(path)
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
