"""iceoryx2 peer (Python bindings, ``iceoryx2`` package): zero-copy publish-subscribe.

Used the way the iceoryx2 examples do it:

* payload type ``iox2.Slice[ctypes.c_uint8]`` with ``initial_max_slice_len`` (the
  "publish_subscribe_dynamic_data" example), ``loan_slice_uninit`` -> write -> ``assume_init``
  -> ``send``;
* blocking receive = the "event_based_communication" pattern: an event service with the same
  name; the publisher ``notify()``-s after each send and the subscriber waits on its
  ``Listener`` when ``receive()`` returns nothing;
* busy-poll = ``subscriber.receive()`` in a loop (the plain "publish_subscribe" example, no
  events).

Isolation and cleanup: every run uses its own ``global.prefix`` and ``global.root_path``
(the "domains" example), so all files iceoryx2 creates carry this run's prefix and the parent
removes exactly those afterwards.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

import numpy as np

from .base import (
    ArrayReceiver,
    ArraySender,
    ChannelSpec,
    Kind,
    Mode,
    Peer,
    Receiver,
    Sender,
    embed_header,
    read_embedded_header,
)

try:  # pragma: no cover - depends on the environment
    import iceoryx2 as iox2
except ImportError:  # pragma: no cover
    iox2 = None  # type: ignore[assignment,unused-ignore]

_BYTES_BUFFER = 1024  # subscriber queue depth for small messages (default is 2)
_ARRAY_BUFFER = 4


def _retry(fn: Any, what: str, timeout: float = 5.0) -> Any:
    """open_or_create can race with the other process creating the same service."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception as exc:  # iceoryx2 raises its own error classes
            if time.monotonic() > deadline:
                raise RuntimeError(f"iceoryx2: {what} failed: {exc!r}") from exc
            time.sleep(0.01)


class _IoxSender(Sender):
    def __init__(self, pub: Any, notifier: Any | None) -> None:
        self.pub = pub
        self.notifier = notifier

    def send(self, data: Any) -> bool:
        n = len(data)
        sample = self.pub.loan_slice_uninit(n)
        sample.payload().as_memory_view().cast("B")[:] = data
        sample.assume_init().send()
        if self.notifier is not None:
            self.notifier.notify()
        return True


class _IoxReceiver(Receiver):
    """Blocking mode waits on the Listener.

    On throughput channels the wait is capped at 50 ms: once, under heavy load, a stream
    consumer here stayed asleep after the last sends (not reproduced since), and the cap keeps
    such a case from hanging the benchmark. ``missed_wakeups`` counts waits that lasted the
    whole cap although a sample was there (none seen so far); ``empty_wakeups`` counts waits
    that returned early without an activation (harmless, common at high rates). Latency,
    wake-up and idle channels use the plain ``blocking_wait()``, so the idle-CPU row shows
    iceoryx2's own behaviour.
    """

    def __init__(self, sub: Any, listener: Any | None, mode: Mode, capped: bool) -> None:
        self.sub = sub
        self.listener = listener
        self.mode = mode
        self._held: Any = None  # the sample backing the last returned view
        self.missed_wakeups = 0  # waited the full cap although a sample was there
        self.empty_wakeups = 0  # returned early without an activation
        self._cap = iox2.Duration.from_millis(50) if capped else None

    def _wait(self) -> None:
        if self.listener is None:
            return
        if self._cap is None:
            self.listener.blocking_wait()
            return
        t0 = time.monotonic()
        if self.listener.timed_wait(self._cap):
            return
        if time.monotonic() - t0 < 0.045:
            self.empty_wakeups += 1
        elif self.sub.has_samples():
            self.missed_wakeups += 1

    def stats(self) -> dict[str, Any]:
        return {"missed_wakeups": self.missed_wakeups, "empty_wakeups": self.empty_wakeups}

    def try_recv(self) -> Any | None:
        sample = self.sub.receive()
        if sample is None:
            return None
        self._held = sample  # keep the shared-memory sample alive while its view is used
        return sample.payload().as_memory_view().cast("B")

    def recv(self) -> Any:
        while True:
            msg = self.try_recv()
            if msg is not None:
                return msg
            self._wait()

    def recv_many(self) -> list[Any]:
        out: list[Any] = []
        while not out:
            while True:
                sample = self.sub.receive()
                if sample is None:
                    break
                out.append(bytes(sample.payload().as_memory_view()))
            if not out:
                self._wait()
        return out


class _IoxArraySender(ArraySender):
    def __init__(self, pub: Any, notifier: Any, nbytes: int) -> None:
        self.pub = pub
        self.notifier = notifier
        self.nbytes = nbytes

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        embed_header(src, seq, stamp_ns)
        sample = self.pub.loan_slice_uninit(self.nbytes)
        dst = np.frombuffer(sample.payload().as_memory_view().cast("B"), dtype=np.float64)
        np.copyto(dst, src.reshape(-1))
        del dst
        sample.assume_init().send()
        self.notifier.notify()
        return True


class _IoxArrayReceiver(ArrayReceiver):
    def __init__(self, sub: Any, listener: Any, shape: tuple[int, ...]) -> None:
        self.sub = sub
        self.listener = listener
        self.shape = shape
        self._held: Any = None

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        while True:
            sample = self.sub.receive()
            if sample is not None:
                break
            self.listener.blocking_wait()
        self._held = sample
        mv = sample.payload().as_memory_view().cast("B")
        arr = np.frombuffer(mv, dtype=np.float64).reshape(self.shape)  # zero-copy view
        seq, stamp = read_embedded_header(arr)
        return seq, stamp, arr


class Iceoryx2Peer(Peer):
    """iceoryx2 IPC publish-subscribe + event services."""

    name = "iceoryx2"
    description = (
        "iceoryx2 pub/sub Slice[u8] loan/send; blocking = event Listener wait + "
        "notify per send; spin = receive() loop"
    )

    def __init__(self) -> None:
        super().__init__()
        self._node: Any = None

    def unavailable(self) -> str | None:
        return None if iox2 is not None else "iceoryx2 is not installed"

    @staticmethod
    def prefix_for(run_dir: str) -> str:
        """File-name prefix of everything iceoryx2 creates in this run."""
        return "shmcb" + os.path.basename(run_dir.rstrip("/")).replace("-", "")[-12:] + "_"

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        return ChannelSpec(self.name, name, kind, size, shape, {"service": f"bench/{name}"})

    # ---- child side --------------------------------------------------------------------
    def attach(self, role: str, run_dir: str, tag: str) -> None:
        super().attach(role, run_dir, tag)
        iox2.set_log_level(iox2.LogLevel.Error)
        cfg = iox2.config.global_config()
        cfg.global_cfg.prefix = iox2.FileName.new(self.prefix_for(run_dir))
        root = os.path.join(run_dir, "iceoryx2") + "/"
        cfg.global_cfg.root_path = iox2.Path.new(root)
        self._node = iox2.NodeBuilder.new().config(cfg).create(iox2.ServiceType.Ipc)

    def detach(self) -> list[Any]:
        self._node = None
        return []

    def _services(self, spec: ChannelSpec, buffer: int) -> tuple[Any, Any]:
        sname = iox2.ServiceName.new(spec.data["service"])
        pubsub = _retry(
            lambda: (
                self._node.service_builder(sname)
                .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                .subscriber_max_buffer_size(buffer)
                .history_size(0)
                .open_or_create()
            ),
            "publish_subscribe open_or_create",
        )
        event = _retry(
            lambda: self._node.service_builder(sname).event().open_or_create(),
            "event open_or_create",
        )
        return pubsub, event

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        pubsub, event = self._services(spec, _BYTES_BUFFER)
        pub = pubsub.publisher_builder().initial_max_slice_len(spec.size).create()
        notifier = event.notifier_builder().create() if mode == "block" else None
        return _IoxSender(pub, notifier)

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        pubsub, event = self._services(spec, _BYTES_BUFFER)
        sub = pubsub.subscriber_builder().buffer_size(_BYTES_BUFFER).create()
        listener = event.listener_builder().create() if mode == "block" else None
        return _IoxReceiver(sub, listener, mode, capped=spec.purpose == "throughput")

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        pubsub, event = self._services(spec, _ARRAY_BUFFER)
        pub = pubsub.publisher_builder().initial_max_slice_len(spec.size).create()
        return _IoxArraySender(pub, event.notifier_builder().create(), spec.size)

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        pubsub, event = self._services(spec, _ARRAY_BUFFER)
        sub = pubsub.subscriber_builder().buffer_size(_ARRAY_BUFFER).create()
        return _IoxArrayReceiver(sub, event.listener_builder().create(), spec.shape)

    # ---- parent side -------------------------------------------------------------------
    def cleanup(self, run_dir: str, hints: list[Any]) -> list[str]:
        prefix = self.prefix_for(run_dir)
        removed = []
        for d in ("/dev/shm", "/tmp"):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for fname in names:
                if fname.startswith(prefix):
                    path = os.path.join(d, fname)
                    try:
                        os.unlink(path)
                        removed.append(path)
                    except OSError:
                        pass
        return removed
