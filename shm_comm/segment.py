"""An open shared-memory segment: its mapping, its atomics and its parsed header.

Creation reclaims a segment left by a crashed owner and refuses one whose owner lives, or
that belongs to another user. Attaching checks who owns the opened file (``trust.py``), then
validates the header (magic, version, checksum, sizes, kind and channel name), before
anything else reads the segment.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import stat
import threading
import time

from . import layout as L
from . import trust
from ._atomic import AtomicBuffer
from ._backend import backend
from .errors import SHMConnectionError, SHMFormatError, SHMUntrustedSegmentError
from .ring import PidLiveness, RowLiveness, ring_out

__all__ = ["RecordLocks", "Segment"]


class Segment:
    """One mapped segment. ``close()`` releases this handle; ``unlink()`` removes the name.

    Closing while NumPy views or memoryviews of the segment are alive is safe: the mapping
    then stays until the last view is gone (it can never vanish under a view).
    """

    def __init__(self, name: str, fd: int, mapping: mmap.mmap, header: L.SegmentHeader,
                 owner: bool) -> None:
        self.name = name
        self.header = header
        self.layout = header.layout
        self.owner = owner
        self._fd = fd
        self._mapping: mmap.mmap | None = mapping
        self.view = memoryview(mapping)
        self.atom = AtomicBuffer(mapping)
        self.closed = False
        self.liveness: RowLiveness = (RecordLocks(self) if backend.RECORD_LOCKS else
                                      PidLiveness(backend.pid_alive, backend.process_token))
        # Held while the descriptor is in use, so that a close() from another thread cannot
        # close it (and the number be reused for another file) under a liveness check.
        self._fd_lock = threading.RLock()

    @classmethod
    def create(cls, name: str, layout: L.SegmentLayout, encoding: int, channel: str,
               metadata: bytes = b"", permissions: int = 0o600) -> Segment:
        """Create segment ``name`` for ``channel``, reclaiming it if its owner is dead.

        Raises :class:`SHMConnectionError` if a live owner has it, if another program's
        segment has the name, or if the system cannot provide the memory. ``permissions``
        is the file mode: 0o600 (owner only, default), 0o640 or 0o660 (the owner's group may
        read; read and write). Nothing wider is allowed.
        """
        if permissions not in (0o600, 0o640, 0o660):
            raise ValueError(f"permissions must be 0o600, 0o640 or 0o660, got {permissions:#o}")
        header = L.SegmentHeader(layout, encoding, os.getpid(), secrets.randbits(63),
                                 time.time_ns(), channel, metadata=metadata)

        def initialize(mapping: mmap.mmap) -> None:
            with memoryview(mapping) as view:
                header.pack_into(view)

        for _attempt in range(20):
            try:
                fd, mapping = backend.create_exclusive(name, layout.total_size, initialize,
                                                       permissions)
            except FileExistsError:
                cls._reclaim(name, channel)
                continue
            except FileNotFoundError:
                continue  # our half-built file was taken for a dead creator's: build anew
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise SHMConnectionError(_no_room(layout, channel, exc)) from exc
                raise SHMConnectionError(f"cannot create segment {name}: {exc}") from exc
            return cls(name, fd, mapping, header, owner=True)
        raise SHMConnectionError(f"could not create segment {name}: it keeps being re-created")

    @staticmethod
    def _reclaim(name: str, channel: str) -> None:
        """Remove ``name`` if it is our own segment and its owner is dead; raise if its owner
        is alive, or if it is not ours (another user's, a link, not a channel)."""

        def ours(st: os.stat_result) -> None:
            if not stat.S_ISREG(st.st_mode):
                raise SHMUntrustedSegmentError(trust.not_a_segment(name, channel, st))
            if st.st_uid != os.geteuid():
                raise SHMUntrustedSegmentError(trust.name_taken(name, channel, st))

        try:
            fd, mapping, size, _st = backend.open_segment(name, check=ours)
        except FileNotFoundError:
            return
        except PermissionError:
            st = backend.lstat(name)
            if st is not None and st.st_uid != os.geteuid():
                raise SHMUntrustedSegmentError(trust.name_taken(name, channel, st)) from None
            raise SHMConnectionError(
                f"segment {name} exists but cannot be opened; remove it with "
                "shm_comm.force_unlink if it is stale"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SHMUntrustedSegmentError(
                    trust.not_a_segment(name, channel, backend.lstat(name))) from None
            raise
        except ValueError as exc:
            raise SHMConnectionError(
                f"segment {name} exists but cannot be opened ({exc}); it belongs to another "
                "program: remove it with shm_comm.force_unlink if it is stale"
            ) from None
        try:
            try:
                header = L.read_header(mapping, size)
            except SHMFormatError as exc:
                raise SHMConnectionError(
                    f"segment {name} exists and is not a readable shm_comm channel ({exc}); "
                    f"remove it with shm_comm.force_unlink({name!r}) if it is stale"
                ) from None
            if header.name != channel:
                raise SHMConnectionError(
                    f"segment {name} belongs to channel {header.name!r}, not {channel!r} "
                    "(their names hash alike); rename one of the channels"
                )
            if backend.is_owner_alive(fd):
                raise SHMConnectionError(
                    f"channel {channel!r} already has a live publisher (pid "
                    f"{header.owner_pid}); close it first or pick another name"
                )
            # The owner is dead. Lock the stale segment so only one reclaimer removes it,
            # and only if the name still points at it.
            if backend.lock_for_reclaim(fd) and backend.same_file(fd, name):
                backend.unlink(name)
                if header.layout.kind == L.KIND_PUBSUB:
                    retire(mapping)  # its readers go and look for the segment we make
            else:
                time.sleep(0.001)
        finally:
            mapping.close()
            os.close(fd)

    @classmethod
    def attach(cls, name: str, channel: str, kind: int, readonly: bool = False,
               trusted: frozenset[int] | None = None, populate: bool = True) -> Segment:
        """Map existing segment ``name`` after checking that a trusted user owns it and that it
        is ``channel`` of ``kind``.

        ``trusted``: the uids whose segments are accepted (default: :func:`trust.trusted_uids`,
        this process's own uid, root, and ``$SHM_COMM_TRUSTED_USERS``). ``populate`` maps
        every page once the header is valid, so that the first messages read are as fast as
        later ones (``backend.populate``); tools that only read the counters pass False.
        Raises ``FileNotFoundError`` if it does not exist (yet),
        :class:`SHMUntrustedSegmentError` for a segment of an untrusted owner, writable by all,
        or a symbolic link, :class:`SHMFormatError` if it is not a channel this library can
        read, and :class:`SHMConnectionError` for a mismatch.
        """
        uids = trust.trusted_uids() if trusted is None else trusted
        try:
            fd, mapping, size, _st = backend.open_segment(
                name, readonly=readonly,
                check=lambda st: trust.check_owner(name, channel, st, uids))
        except PermissionError as exc:
            st = backend.lstat(name)
            owner = "another user" if st is None else f"user {trust.describe_user(st.st_uid)}"
            mode = "" if st is None else f" with mode {stat.S_IMODE(st.st_mode):#o}"
            hint = (" (a read-only segment can be watched with observer=True)"
                    if st is not None and st.st_mode & 0o044 and not readonly else "")
            raise SHMConnectionError(
                f"no permission to open segment {name}: it belongs to {owner}{mode}; "
                "segments are created owner-only unless their publisher shares them with its "
                f"group (docs/security.md){hint}"
            ) from exc
        except ValueError:
            if backend.SHM_DIR is None:  # shm_open platforms: maybe still being created
                raise FileNotFoundError(name) from None
            raise SHMFormatError(
                f"segment {name} exists but is empty: it is not a shm_comm channel; remove "
                f"it with shm_comm.force_unlink({name!r}) if it is stale") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SHMUntrustedSegmentError(
                    trust.not_a_segment(name, channel, backend.lstat(name))) from None
            raise
        try:
            header = L.read_header(mapping, size)
            if header.layout.kind != kind:
                raise SHMConnectionError(
                    f"channel {channel!r} is a {L.KIND_NAMES[header.layout.kind]} channel, "
                    f"not {L.KIND_NAMES[kind]}"
                )
            if header.name != channel:
                raise SHMConnectionError(
                    f"segment {name} belongs to channel {header.name!r}, not {channel!r}"
                )
            if populate:
                backend.populate(mapping, write=False)
        except BaseException:
            mapping.close()
            os.close(fd)
            raise
        return cls(name, fd, mapping, header, owner=False)

    @property
    def file_uid(self) -> int:
        """The uid of the user who owns the segment (its creator)."""
        with self._fd_lock:
            return os.fstat(self._fd).st_uid

    @property
    def shm_bytes(self) -> int:
        """Bytes of shared memory (``/dev/shm``) the segment occupies: what ``df`` counts for
        it, every page being reserved at creation."""
        return os.fstat(self._fd).st_blocks * 512

    def owner_alive(self) -> bool:
        """Whether the segment's creator is alive and has not closed it."""
        with self._fd_lock:
            if self.closed:
                return False
            if self.atom.load(L.CLOSED):
                return False
            return backend.is_owner_alive(self._fd)

    def owner_running(self) -> bool:
        """Whether the creating process still holds the segment (closed or not)."""
        with self._fd_lock:
            return not self.closed and backend.is_owner_alive(self._fd)

    def replaced(self) -> bool:
        """Whether the name now points at another segment (or at none; False once closed)."""
        with self._fd_lock:
            return not self.closed and not backend.same_file(self._fd, self.name)

    def close(self) -> None:
        """Release this process's handle. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.atom.release()
        try:
            self.view.release()
        except BufferError:
            pass  # slices of it are alive; they keep the mapping alive
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # exported views keep the mapping; it is unmapped when they are gone
        with self._fd_lock:
            os.close(self._fd)

    def forget(self) -> None:
        """Drop this handle's file descriptor without touching the segment (fork children)."""
        if not self.closed:
            self.closed = True
            os.close(self._fd)

    def unlink(self) -> None:
        """Remove the segment's name if it still refers to this segment."""
        with self._fd_lock:
            if not self.closed and backend.same_file(self._fd, self.name):
                backend.unlink(self.name)


class RecordLocks:
    """Row liveness by record locks (see ``ring.RowLiveness`` and ``_backend/posix.py``).

    A row's holder keeps an exclusive open-file-description lock on the row's 64 bytes of the
    segment file, through the segment's own descriptor; the kernel drops it when the holder
    dies, however it dies, in whatever pid namespace it runs, and with or without ``/proc``.
    Others probe it (``alive``) or take it to free a dead holder's row (``reap``). Tokens are
    random per claim, so a row that changed hands is told apart even if both holders had the
    same pid (as two containers' first processes do).
    """

    def __init__(self, segment: Segment) -> None:
        self._segment = segment
        self._held: set[int] = set()  # rows whose lock this segment handle holds

    def _usable(self) -> int | None:
        segment = self._segment
        return None if segment.closed else segment._fd

    def token(self, pid: int) -> int:
        """A random number, new for every claim (the pid is kept for people only)."""
        return secrets.randbits(62) + 1

    def claim(self, row: int) -> bool:
        """Take ``row``'s lock; False if another open of the segment holds it."""
        with self._segment._fd_lock:
            fd = self._usable()
            if fd is None or row in self._held:
                return False
            if not backend.lock_range(fd, self._segment.layout.record(row), L.RECORD_SIZE):
                return False
            self._held.add(row)
            return True

    def unclaim(self, row: int) -> None:
        """Give ``row``'s lock back (closing the segment does too)."""
        with self._segment._fd_lock:
            fd = self._usable()
            if row in self._held:
                self._held.discard(row)
                if fd is not None:
                    backend.unlock_range(fd, self._segment.layout.record(row), L.RECORD_SIZE)

    def reap(self, row: int, pid: int, token: int) -> bool:
        """Take a dead holder's ``row`` (its lock is free); False while the holder lives."""
        return row not in self._held and self.claim(row)

    def alive(self, row: int, pid: int, token: int) -> bool:
        """Whether some open of the segment holds ``row``'s lock (``F_OFD_GETLK``)."""
        with self._segment._fd_lock:
            fd = self._usable()
            if row in self._held or fd is None:
                return True
            return backend.range_locked(fd, self._segment.layout.record(row), L.RECORD_SIZE)


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def _no_room(layout: L.SegmentLayout, channel: str, exc: OSError) -> str:
    """What a channel that does not fit in shared memory needed, what is left, what to do."""
    space = backend.space()
    where = backend.SHM_DIR or "shared memory"
    left = (f"; {where} has {_mib(space[1])} free of {_mib(space[0])} (`shm-comm list` "
            "shows what takes it)" if space else "")
    holders = (f" for {layout.num_slots} slots, {layout.max_holders} zero-copy holders and "
               "a loan" if layout.kind == L.KIND_PUBSUB else "")
    return (
        f"cannot reserve {_mib(layout.total_size)} ({layout.total_size} bytes) of shared "
        f"memory for channel {channel!r}, {layout.num_buffers} buffers of "
        f"{_mib(layout.buffer_stride)}{holders}: {exc.strerror}{left}. Free some, enlarge "
        f"{where} (Docker: docker run --shm-size=512m; elsewhere: sudo mount -o "
        "remount,size=512M /dev/shm), or give the channel fewer or smaller slots or fewer "
        "zero-copy holders (num_slots=, slot_size=, max_holders=)"
    )


def retire(mapping: mmap.mmap) -> None:
    """Mark a dead publisher's segment closed and wake every reader asleep on it, so they go
    and look for its successor (a writable mapping of a pub/sub segment)."""
    atom = AtomicBuffer(mapping)
    try:
        ring_out(atom)
    finally:
        atom.release()
