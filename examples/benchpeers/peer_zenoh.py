"""Eclipse Zenoh peer (``eclipse-zenoh`` Python binding), peer-to-peer over a Unix socket.

Used as the zenoh-python examples do: ``declare_publisher(..., congestion_control=BLOCK)``
(z_ping/z_pong/z_pub_thr), ``express=True`` for latency workloads (z_pong's option), the
default FIFO handler with ``recv()`` / ``try_recv()`` on the subscriber. Small messages are
plain ``bytes`` puts (zenoh's transport SHM optimisation moves payloads above ~3 KiB through
shared memory by itself). Arrays use the explicit SHM API (``zenoh.shm.ShmProvider``,
z_pub_shm.py). In zenoh-python 1.x SHM buffers do not export the buffer protocol: the producer
fills a ``ZShmMut`` from a ``bytearray`` (one copy) and the consumer gets its bytes with
``ZBytes.to_bytes()`` (one copy) before ``np.frombuffer``.

Discovery: multicast scouting is off; process "a" listens on a Unix socket in the run
directory and process "b" connects to it.

Cleanup: zenoh names its POSIX segments ``/dev/shm/<number>.zenoh`` and keeps a shared
``flock`` on every segment in use; some stay behind after a normal exit (it removes orphans at
its next start). Each child reports the ``.zenoh`` files it had mapped/open; the parent removes
those that did not exist before the run and that no live process holds (exclusive ``flock``).
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

import numpy as np

from .base import (
    ArrayReceiver,
    ArraySender,
    ChannelSpec,
    Mode,
    Peer,
    Receiver,
    Sender,
    embed_header,
    read_embedded_header,
)

try:  # pragma: no cover - depends on the environment
    import zenoh
except ImportError:  # pragma: no cover
    zenoh = None  # type: ignore[assignment]


def zenoh_segments_of_process(pid: int | str = "self") -> set[str]:
    """Names of ``/dev/shm/*.zenoh`` files a process (default: this one) maps or holds open."""
    found: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.startswith("/dev/shm/") and path.endswith(".zenoh"):
                    found.add(os.path.basename(path))
    except OSError:
        pass
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                path = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if path.startswith("/dev/shm/") and path.endswith(".zenoh"):
                found.add(os.path.basename(path))
    except OSError:
        pass
    return found


def existing_zenoh_segments() -> set[str]:
    """Snapshot of ``*.zenoh`` names in /dev/shm (taken by the parent before the run)."""
    try:
        return {n for n in os.listdir("/dev/shm") if n.endswith(".zenoh")}
    except OSError:
        return set()


class _ZSender(Sender):
    def __init__(self, pub: Any) -> None:
        self.pub = pub

    def send(self, data: Any) -> bool:
        self.pub.put(bytes(data))
        return True


class _ZReceiver(Receiver):
    def __init__(self, sub: Any, mode: Mode) -> None:
        self.sub = sub
        self.mode = mode

    def recv(self) -> Any:
        if self.mode == "spin":
            return super().recv()
        return self.sub.recv().payload.to_bytes()

    def try_recv(self) -> Any | None:
        sample = self.sub.try_recv()
        return None if sample is None else sample.payload.to_bytes()


class _ZArraySender(ArraySender):
    def __init__(self, pub: Any, nbytes: int) -> None:
        self.pub = pub
        self.nbytes = nbytes
        self.provider = zenoh.shm.ShmProvider.default_backend(max(4 * nbytes, 1 << 20))
        self.policy = zenoh.shm.BlockOn(zenoh.shm.GarbageCollect())
        self._backing: bytearray | None = None

    def new_source(self, shape: tuple[int, ...]) -> np.ndarray:
        # ZShmMut.__setitem__ accepts bytes/bytearray only, so back the source by a bytearray.
        self._backing = bytearray(self.nbytes)
        return np.frombuffer(self._backing, dtype=np.float64).reshape(shape)

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        embed_header(src, seq, stamp_ns)
        data = self._backing if self._backing is not None else src.tobytes()
        buf = self.provider.alloc(self.nbytes, policy=self.policy)
        buf[:] = data
        self.pub.put(buf)
        return True


class _ZArrayReceiver(ArrayReceiver):
    def __init__(self, sub: Any, shape: tuple[int, ...]) -> None:
        self.sub = sub
        self.shape = shape

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        raw = self.sub.recv().payload.to_bytes()
        arr = np.frombuffer(raw, dtype=np.float64).reshape(self.shape)
        seq, stamp = read_embedded_header(arr)
        return seq, stamp, arr


class ZenohPeer(Peer):
    """One zenoh session per process, peer mode, Unix-socket link between the two."""

    name = "zenoh"
    description = (
        "zenoh put/recv (BLOCK congestion control, express for latency), SHM provider for "
        "arrays; spin = try_recv loop"
    )

    def __init__(self) -> None:
        super().__init__()
        self._session: Any = None
        self._before: set[str] = set()

    def begin_run(self, run_dir: str) -> None:
        self._before = existing_zenoh_segments()

    def unavailable(self) -> str | None:
        return None if zenoh is not None else "eclipse-zenoh is not installed"

    def _open_session(self) -> Any:
        if self._session is None:
            cfg = zenoh.Config()
            cfg.insert_json5("mode", json.dumps("peer"))
            cfg.insert_json5("scouting/multicast/enabled", "false")
            ep = "unixsock-stream/" + os.path.join(self.run_dir, f"zenoh-{self.tag}.sock")
            if self.role == "a":
                cfg.insert_json5("listen/endpoints", json.dumps([ep]))
            else:
                cfg.insert_json5("connect/endpoints", json.dumps([ep]))
                cfg.insert_json5("connect/exit_on_failure", "false")
            self._session = zenoh.open(cfg)
        return self._session

    def attach(self, role: str, run_dir: str, tag: str) -> None:
        super().attach(role, run_dir, tag)
        zenoh.init_log_from_env_or("error")
        self._open_session()

    def detach(self) -> list[Any]:
        names = sorted(zenoh_segments_of_process())
        if self._session is not None:
            self._session.close()
            self._session = None
        return names

    def _key(self, spec: ChannelSpec) -> str:
        return f"bench/{self.tag}/{spec.name}"

    def _publisher(self, spec: ChannelSpec) -> Any:
        return self._open_session().declare_publisher(
            self._key(spec),
            congestion_control=zenoh.CongestionControl.BLOCK,
            express=spec.purpose == "latency",
        )

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        return _ZSender(self._publisher(spec))

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        return _ZReceiver(self._open_session().declare_subscriber(self._key(spec)), mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        return _ZArraySender(self._publisher(spec), spec.size)

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        sub = self._open_session().declare_subscriber(self._key(spec))
        return _ZArrayReceiver(sub, spec.shape)

    def hints_from_pid(self, pid: int) -> list[Any]:
        """Segments of a child about to be killed (it will not reach ``detach``)."""
        return sorted(zenoh_segments_of_process(pid))

    def cleanup(self, run_dir: str, hints: list[Any]) -> list[str]:
        """Remove .zenoh segments our children used that are new and no longer held."""
        used = {h for h in hints if isinstance(h, str) and h.endswith(".zenoh") and "/" not in h}
        removed = []
        for name in sorted(used - self._before):
            path = os.path.join("/dev/shm", name)
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # still held by a live process: not ours to remove
                continue
            try:
                os.unlink(path)
                removed.append(path)
            finally:
                os.close(fd)
        return removed
