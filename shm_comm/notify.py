"""A file descriptor per channel end that becomes readable when the end may have something to
receive: what event loops (asyncio, trio, Qt, ``selectors``) can wait on.

Receivers sleep on futex words in shared memory (docs/design.md, "Waiting"); an event loop
can only wait on file descriptors. A :class:`Readiness` owns a non-blocking eventfd and one
watch slot of the process's notifier, a set of helper threads in C (``_notify.c``) that sleep
in the kernel on the futex words of every armed watch at once and signal the eventfd when one
changes. Arming follows the doorbell protocol of a sleeping reader exactly: announce (a bit in
``waiters``, or a counter), read the futex word, look at the condition, then hand the word and
the value read to the notifier, which withdraws the announcement when the watch fires. So
nothing here changes what a publisher does: it wakes whoever announced.

Which notifier (``SHM_COMM_NOTIFIER`` may force one, for tests):

* ``waitv`` (Linux >= 5.16): shared threads, each sleeping in ``futex_waitv`` on up to 127
  watches; zero CPU while nothing happens.
* ``single`` (older Linux kernels): one thread per armed watch, plain ``FUTEX_WAIT``.
* ``poll`` (no futexes: macOS): one Python thread that compares the armed words every
  ``FALLBACK_POLL`` seconds, like the blocking receive's fallback there.

This module never imports asyncio; ``aio.py`` builds the awaitables on top of it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

from . import _atomic
from . import layout as L
from ._atomic import AtomicBuffer
from .errors import SHMClosedError
from .wait import FALLBACK_POLL

_CNotifier = getattr(_atomic, "Notifier", None)  # Linux only

__all__ = ["WITHDRAW_BITS", "WITHDRAW_COUNT", "WITHDRAW_NONE", "Readiness", "arm_subscriber",
           "disarm_subscriber", "drain", "notifier_kind"]

WITHDRAW_NONE = 0
WITHDRAW_BITS = 1
WITHDRAW_COUNT = 2
_LOW32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


class _PollingNotifier:
    """The fallback where there are no futexes: one thread compares the armed words every
    ``FALLBACK_POLL`` seconds and sleeps on a condition variable while nothing is armed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._fds: dict[int, int] = {}
        self._armed: dict[int, tuple[AtomicBuffer, int, int, int, int, int, float | None]] = {}
        self._fired: dict[int, tuple[int, int]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def add(self, fd: int) -> int:
        with self._lock:
            slot = self._next
            self._next += 1
            self._fds[slot] = fd
            self._fired[slot] = (0, 0)
            return slot

    def arm(self, slot: int, atom: AtomicBuffer, word: int, expected: int, announce: int,
            value: int, withdraw: int, timeout: float, bump: bool) -> bool:
        with self._lock:
            fd = self._fds[slot]
            self._armed.pop(slot, None)
            drain(fd)
            if atom.load(word) & _LOW32 != expected & _LOW32:
                return False
            deadline = None if timeout < 0 else time.monotonic() + timeout
            self._armed[slot] = (atom, word, expected & _LOW32, announce, value, withdraw,
                                 deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shm_comm-notifier",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()
            return True

    def disarm(self, slot: int) -> bool:
        with self._lock:
            return self._armed.pop(slot, None) is not None

    def armed(self, slot: int) -> bool:
        with self._lock:
            return slot in self._armed

    def fired(self, slot: int) -> tuple[int, int]:
        with self._lock:
            return self._fired[slot]

    def remove(self, slot: int) -> None:
        with self._lock:
            self._armed.pop(slot, None)
            self._fds.pop(slot, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._armed:
                    self._changed.wait()
                    continue
                now = time.monotonic()
                for slot, (atom, word, expected, announce, value, withdraw, deadline) in list(
                        self._armed.items()):
                    try:
                        if atom.load(word) & _LOW32 == expected and (deadline is None
                                                                     or now < deadline):
                            continue
                        if withdraw == WITHDRAW_BITS:
                            atom.fetch_and(announce, ~value & _MASK64)
                        elif withdraw == WITHDRAW_COUNT:
                            atom.fetch_add(announce, -value)
                    except SHMClosedError:
                        pass  # its channel end closed: fire, the waiting task finds out
                    del self._armed[slot]
                    self._fired[slot] = (self._fired[slot][0] + 1, time.monotonic_ns())
                    _signal(self._fds[slot])
                self._changed.wait(FALLBACK_POLL)


def drain(fd: int) -> None:
    """Empty a readiness descriptor (non-blocking)."""
    try:
        if len(os.read(fd, 4096)) == 8 and hasattr(os, "eventfd"):
            return  # an eventfd: one read takes it all
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _signal(fd: int) -> None:
    try:
        os.write(fd, (1).to_bytes(8, "little"))
    except BlockingIOError:
        pass  # the counter (or pipe) is full: readable anyway


# The process's notifier: the C one (its methods are declared in _atomic.pyi) or, where there
# are no futexes, _PollingNotifier, which has the same methods.
_Notifier: TypeAlias = "_atomic.Notifier | _PollingNotifier"
_NOTIFIER: _Notifier | None = None
_KIND = ""
_LEAKED: list[object] = []  # a fork child's copy of the parent's notifier: never freed


def notifier_kind() -> str:
    """Which notifier this process uses: ``"waitv"``, ``"single"`` or ``"poll"``."""
    _notifier()
    return _KIND


def _notifier() -> _Notifier:
    global _NOTIFIER, _KIND
    if _NOTIFIER is None:
        wanted = os.environ.get("SHM_COMM_NOTIFIER", "")
        if wanted not in ("", "waitv", "single", "poll"):
            raise ValueError(f"SHM_COMM_NOTIFIER must be waitv, single or poll, not {wanted!r}")
        if _CNotifier is None or wanted == "poll":
            _NOTIFIER, _KIND = _PollingNotifier(), "poll"
        else:
            made = _CNotifier() if wanted == "" else _CNotifier(single=wanted == "single")
            _NOTIFIER, _KIND = made, "single" if made.single else "waitv"
    return _NOTIFIER


def _forget_after_fork() -> None:
    # The parent's helper threads do not exist in the child, and its lock may be held:
    # the child starts its own notifier when it needs one.
    global _NOTIFIER
    if _NOTIFIER is not None:
        _LEAKED.append(_NOTIFIER)
        _NOTIFIER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class Readiness:
    """A channel end's readiness descriptor and its one-shot watch on a futex word.

    ``fileno()`` is a non-blocking eventfd (a pipe where there is none). Whoever waits on the
    descriptor (an event loop's registration, a task inside a wait) holds it with
    :meth:`hold` and lets go with :meth:`release`: :meth:`close` closes the descriptor only
    once nobody holds it, so no loop is left watching a number that may be reused. Not
    thread-safe, except :meth:`set`, :meth:`hold`, :meth:`release` and :meth:`close`.
    """

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._write_fd = self._fd
        else:  # pragma: no cover - not Linux
            self._fd, self._write_fd = os.pipe()
            os.set_blocking(self._fd, False)
            os.set_blocking(self._write_fd, False)
        self._notifier = _notifier()
        self._slot = self._notifier.add(self._write_fd)
        self._lock = threading.Lock()
        self._holders = 1  # ourselves, until close()
        self.closed = False
        self.binding: object | None = None
        """Set by ``aio.py``: the event loop this descriptor is registered with."""
        self.on_close: Callable[[], None] | None = None
        """Called by :meth:`close` (in the closing thread) to wake and detach waiters."""

    def fileno(self) -> int:
        """The descriptor to wait on (readable once the watch fired or :meth:`set` ran)."""
        return self._fd

    @property
    def armed(self) -> bool:
        """Whether a watch is armed and has not fired yet."""
        return not self.closed and self._notifier.armed(self._slot)

    @property
    def fired(self) -> int:
        """How often the watch fired so far."""
        return self._notifier.fired(self._slot)[0]

    @property
    def fired_at(self) -> int:
        """When the watch last fired, ``time.monotonic_ns()`` (0: never)."""
        return self._notifier.fired(self._slot)[1]

    def arm(self, atom: AtomicBuffer, word: int, expected: int, announce: int = -1,
            value: int = 0, withdraw: int = WITHDRAW_NONE, timeout: float | None = None,
            bump: bool = False) -> bool:
        """Empty the descriptor and watch the futex word at ``word`` (an offset in ``atom``):
        once its low 32 bits differ from ``expected`` (or ``timeout`` seconds passed),
        withdraw the announcement (``withdraw``: clear the bits ``value`` of the word at
        ``announce``, or subtract ``value`` from it) and make the descriptor readable.

        Returns False, arming nothing and withdrawing nothing, if the word already differs.
        The watch pins the mapping while the notifier may read it (the in-flight rule of
        ``_atomic.h``), and ``atom.release()`` (the end's close) wakes it meanwhile: ``bump``
        says that the word is a doorbell that the release may bump (pub/sub readers).
        Raises :class:`SHMClosedError` if ``atom`` is released already.
        """
        if self.closed:
            raise ValueError("the readiness descriptor is closed")
        return self._notifier.arm(self._slot, atom, word, expected, announce, value, withdraw,
                                  -1.0 if timeout is None else timeout, bump)

    def disarm(self) -> bool:
        """Stop watching; returns whether a watch was still armed (its announcement is then
        the caller's to withdraw). Afterwards the notifier never reads the mapping again."""
        if self.closed:
            return False
        return self._notifier.disarm(self._slot)

    def set(self) -> None:
        """Make the descriptor readable (thread-safe)."""
        with self._lock:
            if self._holders:
                _signal(self._write_fd)

    def clear(self) -> None:
        """Empty the descriptor."""
        with self._lock:
            if self._holders:
                drain(self._fd)

    def hold(self) -> bool:
        """Keep the descriptor open until :meth:`release`; False (nothing held) if closed."""
        with self._lock:
            if self.closed:
                return False
            self._holders += 1
            return True

    def release(self) -> None:
        """Let go of a :meth:`hold`; the last one closes the descriptor after :meth:`close`."""
        with self._lock:
            self._holders -= 1
            if self._holders:
                return
        os.close(self._fd)
        if self._write_fd != self._fd:
            os.close(self._write_fd)

    def close(self) -> None:
        """Disarm, wake whoever waits (:attr:`on_close`, and the descriptor turns readable)
        and close the descriptor once nobody holds it. Idempotent; any thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._notifier.remove(self._slot)
            _signal(self._write_fd)
        if self.on_close is not None:
            self.on_close()
        self.release()


def _withdraw_bit(atom: AtomicBuffer, bit: int) -> None:
    atom.fetch_and(L.WAITERS, ~bit & _MASK64)


def arm_subscriber(ready: Readiness, atom: AtomicBuffer, cursor: int, bit: int,
                   timeout: float | None = None) -> bool:
    """Arm ``ready`` for a pub/sub reader whose next message is ``cursor``: the doorbell
    protocol of ``wait_past`` with the notifier in the sleeper's place. ``bit`` is the reader's
    bit in ``waiters`` (0 for an observer, which cannot announce itself, so its watch should
    have a ``timeout``). Returns False, arming nothing, when a message (or a close) is there.
    """
    if bit:
        atom.fetch_or(L.WAITERS, bit)
    rung = atom.load(L.DOORBELL)
    if atom.load(L.HEAD) > cursor or atom.load(L.CLOSED):
        if bit:
            _withdraw_bit(atom, bit)
        return False
    if ready.arm(atom, L.DOORBELL, rung, L.WAITERS if bit else -1, bit,
                 WITHDRAW_BITS if bit else WITHDRAW_NONE, timeout, bump=True):
        return True
    if bit:
        _withdraw_bit(atom, bit)
    return False


def disarm_subscriber(ready: Readiness, atom: AtomicBuffer, bit: int) -> None:
    """Take back a subscriber's watch, and its announcement if the watch had not fired."""
    if ready.disarm() and bit:
        _withdraw_bit(atom, bit)

