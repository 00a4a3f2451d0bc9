"""Finding and inspecting channels from outside: for tools, widgets and clean-up.

Everything here only reads segments (mapped read-only), except :func:`force_unlink` and
:func:`remove_stale`, which remove names, and never the name of a live channel (one whose
creating process still holds it) unless asked to with ``force_unlink(name, live=True)``.
"""

from __future__ import annotations

import fnmatch
import os
import time
from typing import Any

from . import layout as L
from . import ring, trust
from ._backend import backend
from .errors import SHMFormatError
from .naming import (
    SEGMENT_PREFIX,
    SEGMENT_PREFIXES,
    is_segment_name,
    resolve_segment_name,
    segment_name,
)
from .segment import Segment, retire

__all__ = ["channel_info", "force_unlink", "list_channels", "list_segments", "remove_if_stale",
           "remove_stale"]


def _owner(info: dict[str, Any], uid: int) -> None:
    info.update(owner_uid=uid, owner=backend.user_name(uid) or str(uid),
                trusted=uid in trust.trusted_uids())


def _describe(name: str) -> dict[str, Any]:
    info: dict[str, Any] = {"segment": name}
    try:
        fd, mapping, size, st = backend.open_segment(name, readonly=True)
    except (OSError, ValueError) as exc:
        info.update(error=str(exc), stale=False)
        seen = backend.lstat(name)
        if seen is not None:
            _owner(info, seen.st_uid)
            info["shm_bytes"] = seen.st_blocks * 512  # unreadable, but it takes memory
        info.update(_space())
        return info
    _owner(info, st.st_uid)
    try:
        try:
            header = L.read_header(mapping, size)
        except SHMFormatError as exc:
            info.update(error=str(exc), stale=False)
            return info
        segment = Segment(name, os.dup(fd), mapping, header, owner=False)
        try:
            info.update(_info_from_segment(segment))
        finally:
            segment.close()
    finally:
        os.close(fd)
    return info


def _space() -> dict[str, int | None]:
    """``shm_total`` and ``shm_free``: size and free bytes of /dev/shm (None on macOS)."""
    space = backend.space()
    return {"shm_total": space[0] if space else None, "shm_free": space[1] if space else None}


def _counters(segment: Segment) -> tuple[int, int]:
    """``(head, bytes_total)`` as one consistent pair: ``bytes_total`` counts exactly the
    ``head`` messages.

    Loaded apart, a message published in between counts in one and not in the other (``bw``'s
    mean size was off on a busy machine). A channel's ring takes the pair in C
    (``Ring.counters``: a writer at full speed moves on between two loads from Python) and
    answers None while a writer is between its stores; preempted there it can stay for
    milliseconds on a loaded machine, so we wait for it for as long as its process holds the
    segment (up to 1 s: a stopped one, SIGSTOP or a debugger, must not stall ``top``); a writer
    that died there leaves the pair for good, and we take it as it is. Queues (request/reply,
    push/pull) have no such ring entry: there the pair is the one whose ``bytes_total`` did not
    change around the load of ``head``.
    """
    atom, lay = segment.atom, segment.layout
    fast = ring.fast_path(atom, lay) if lay.kind == L.KIND_PUBSUB else None
    deadline = time.monotonic() + 1.0
    attempt = 0
    while True:
        if fast is not None:
            pair = fast.counters()
            if pair is not None:
                return pair
        else:
            data = atom.load(L.BYTES_TOTAL)
            head = atom.load(L.HEAD)
            if atom.load(L.BYTES_TOTAL) == data:
                return head, data
        attempt += 1
        if attempt > 8:
            if (attempt > 40 and not segment.owner_running()) or time.monotonic() > deadline:
                return atom.load(L.HEAD), atom.load(L.BYTES_TOTAL)
            time.sleep(0.001)


def _info_from_segment(segment: Segment) -> dict[str, Any]:
    atom, lay, header = segment.atom, segment.layout, segment.header
    head, bytes_total = _counters(segment)
    alive = segment.owner_alive()
    owner_running = segment.owner_running()
    last_ts = None
    queue = lay.kind != L.KIND_PUBSUB
    if head > 0 and not queue:
        entry = atom.load(lay.entry(head - 1))
        if (entry >> L.ENTRY_INDEX_BITS) - 1 == head - 1:
            index = entry & L.ENTRY_INDEX_MASK
            if index < lay.num_buffers:
                _seq, ts, _len, _enc, _flags = L.SLOT_HEADER.unpack_from(segment.view,
                                                                       lay.buffer(index))
                last_ts = ts / 1e9
    records = ring.read_records(atom, lay)
    return {
        "name": header.name,
        "kind": L.KIND_NAMES[lay.kind],
        "encoding": L.ENCODING_NAMES[header.encoding],
        "publisher_pid": header.owner_pid,
        "publisher_alive": alive,
        "stale": not owner_running,
        "closed": bool(atom.load(L.CLOSED)),
        "msg_count": head,
        "bytes_total": bytes_total,
        # Queues (request/reply, push/pull) never drop: a full queue refuses the sender.
        "drop_count": 0 if queue else ring.drop_count(atom, lay),
        "queued": max(0, head - atom.load(L.QUEUE_TAIL)) if queue else None,
        "subscribers": len(records),
        "num_slots": lay.num_slots,
        "slot_size": lay.slot_size,
        "size": lay.total_size,
        "num_buffers": lay.num_buffers,
        "buffer_stride": lay.buffer_stride,
        "max_holders": lay.max_holders,
        "holders": ring.holder_count(atom) if not queue else 0,
        "shm_bytes": segment.shm_bytes,
        **_space(),
        "created": header.created_ns / 1e9,
        "last_timestamp": last_ts,
        "format_version": f"{header.version[0]}.{header.version[1]}",
    }


def list_segments() -> list[str]:
    """The names of every shm_comm segment on this machine, sorted (Linux; [] on macOS).

    These are OS-level names (``shmcp_joints``; ``/dev/shm/shmcp_joints`` on Linux), as in
    shm-comm 1.0, and what :func:`force_unlink` takes. :func:`list_channels` describes each.
    """
    return [name for name in backend.list_names(SEGMENT_PREFIX) if is_segment_name(name)]


def list_channels() -> list[dict[str, Any]]:
    """Every shm_comm segment on this machine (Linux), with its channel's counters.

    Each entry has ``segment`` and either the channel fields (``name``, ``kind``,
    ``publisher_pid``, ``publisher_alive``, ``stale``, ``msg_count``, ``drop_count``,
    ``subscribers``...) or ``error`` for a segment that cannot be read; and the memory:
    ``shm_bytes`` (what the segment takes of /dev/shm), ``shm_total`` and ``shm_free`` (the
    size of /dev/shm and what is left of it, the same in every entry).
    """
    return [_describe(name) for name in list_segments()]


def channel_info(name: str, kind: str = "pubsub",
                 trusted_users: trust.TrustedUsers = None) -> dict[str, Any] | None:
    """Counters of channel ``name`` (as in :func:`list_segments`), or None if it is absent.

    Like every channel end, reads only a segment of this process's user, root, or one of
    ``trusted_users`` (else :class:`~shm_comm.SHMUntrustedSegmentError`).
    """
    seg = segment_name(kind, name)
    try:
        segment = Segment.attach(seg, name, {"pubsub": L.KIND_PUBSUB, "reqrep": L.KIND_REQREP,
                                             "pipeline": L.KIND_PIPELINE}[kind], readonly=True,
                                 trusted=trust.trusted_uids(trusted_users),
                                 populate=False)
    except FileNotFoundError:
        return None
    try:
        info = {"segment": seg, **_info_from_segment(segment)}
        _owner(info, segment.file_uid)
    finally:
        segment.close()
    return info


def force_unlink(name: str, *, live: bool = False) -> bool:
    """Remove a channel's segment whose creator is gone; True if it was removed.

    ``name`` is a segment name (``shmcp_joints``, as :func:`list_segments` and
    ``shm_comm.utils.pub_segment_name`` return), shm-comm 1.0's name for it
    (``shmcomm_pub_joints``), or a pub/sub channel name (``joints``). It only ever removes
    shm_comm segments, including ones that cannot be read (corrupted, another format
    version), and returns False if there is none of that name.

    A live channel, one whose creating process still holds it, is left alone and False is
    returned: close it in its owner, or stop that process. ``live=True`` removes the name of
    a live channel too. Then only the name goes: the publisher and its subscribers keep
    working on the unnamed segment (its memory is freed when the last of them closes), new
    subscribers cannot find it, and a new publisher may create the channel again (the old
    subscribers move to it once the old publisher is gone). Raises ``ValueError`` for a name
    that is neither a segment name nor a valid channel name.
    """
    segment = resolve_segment_name(name)
    if remove_if_stale(segment, unreadable=True):
        return True
    return live and backend.unlink(segment)


def remove_if_stale(segment: str, dry_run: bool = False, *, unreadable: bool = False) -> bool:
    """Remove ``segment`` if its creator is gone; True if it was (or would be) removed.

    "Gone" is decided by the creator's lock (the kernel drops it when the process dies), not
    by pid. Like a reclaiming publisher, it takes the dead creator's lock before unlinking and
    unlinks only if the name still points at that segment: a publisher reclaiming the name at
    the same moment either waits for us or has already replaced it, so a live segment is never
    removed. Other users' segments are left alone (even when this process could remove them,
    as root can). Segments that are not readable shm_comm channels are left alone, unless
    ``unreadable``: then they are removed too when no process holds their creator's lock (an
    empty one always: nothing can be using it).
    """
    def ours(st: os.stat_result) -> None:
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{segment} belongs to uid {st.st_uid}")

    try:
        fd, mapping, size, _st = backend.open_segment(segment, check=ours)
    except PermissionError:
        return False  # another user's: not ours to judge or remove
    except ValueError:  # empty: no channel and no creator's lock, unless still being made
        return unreadable and backend.SHM_DIR is not None and (dry_run
                                                                or backend.unlink(segment))
    except OSError:
        return False
    try:
        header: L.SegmentHeader | None
        try:
            header = L.read_header(mapping, size)
        except SHMFormatError:
            if not unreadable:
                return False
            header = None
        if backend.is_owner_alive(fd):
            return False
        if dry_run:
            return True
        if not (backend.lock_for_reclaim(fd) and backend.same_file(fd, segment)
                and backend.unlink(segment)):
            return False
        if header is not None and header.layout.kind == L.KIND_PUBSUB:
            retire(mapping)  # its subscribers go and look for a new one
        return True
    finally:
        mapping.close()
        os.close(fd)


def remove_stale(dry_run: bool = False, pattern: str | None = None) -> list[str]:
    """Remove the segments whose creator process is gone; never a live one.

    ``pattern`` (a glob) limits it to channels or segment names that match. Also removes
    half-built segments whose creator died during creation (``.shmcp_joints.PID.RANDOM.tmp``,
    judged by the name they were built for). Returns the names removed (or that would be,
    with ``dry_run``; half-built ones are then not listed).
    """
    def fits(segment: str, channel: str) -> bool:
        return pattern is None or any(fnmatch.fnmatchcase(text, pattern)
                                      for text in (channel, segment))

    def half_built_fits(segment: str) -> bool:
        return fits(segment, segment.split("_", 1)[1])

    removed = []
    if not dry_run:
        for prefix in SEGMENT_PREFIXES:
            removed.extend(backend.remove_dead_temporaries(prefix, half_built_fits))
    for info in list_channels():
        if "error" in info or info["publisher_alive"]:
            continue
        if not fits(info["segment"], info["name"]):
            continue
        if remove_if_stale(info["segment"], dry_run):
            removed.append(info["segment"])
    return removed
