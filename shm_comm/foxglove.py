"""Live channels in Foxglove: a Foxglove WebSocket server that serves shm_comm channels.

    with FoxgloveBridge(["imu", "camera*"]) as bridge:   # None: every channel
        print(bridge.url)                                # ws://127.0.0.1:8765
        ...                                              # open it in Foxglove
    bridge.stats()                                       # per channel: read, sent, missed

Needs the ``foxglove`` extra (``pip install -e ".[foxglove]"`` in the checkout: Foxglove's
SDK, ``foxglove-sdk``, which runs the server, and Foxglove's protobuf schemas);
docs/foxglove.md has the commands. ``shm-comm foxglove`` runs one from a shell.

Design (the why):

* **The server is Foxglove's.** ``foxglove-sdk`` implements the WebSocket protocol (the
  handshake, advertising, subscriptions, one outbox per client); this module decides what
  each channel looks like (``foxglove_schemas.py``) and feeds it.
* **Observers only.** Each channel is read with ``Subscriber(observer=True)``: the segment
  is mapped read-only, no subscriber row is taken, the publisher never waits for the bridge
  and no drop is counted against the channel. The bridge's thread only hands messages to the
  SDK, which queues them per client (``message_backlog_size`` messages) and drops a slow
  client's oldest ones itself: no client can hold up the thread, so none can reach back to
  a publisher.
* **What is missed is counted.** Per channel: ``read`` (from the ring), ``sent`` (to
  Foxglove, while a client subscribed), ``missed`` (messages the ring overwrote before the
  bridge read them, while a client was subscribed), ``unsent`` (messages that do not fit the
  channel's schema, e.g. a non-dict on a JSON channel). Messages are read only while a
  client subscribes; a new subscription starts with the newest one. Per client, ``clients``
  lists which channels it subscribes to and how many messages were handed to the SDK for it
  (``offered``); the SDK drops a stalled client's oldest queued messages without saying how
  many, which ``outbox_full`` counts as the SDK's own reports of it (``stats()['clients']``).
* **One polling loop.** Observers cannot ask to be woken (that would write to the segment),
  so one thread polls every channel, as the recorder does, and sleeps ``poll_interval`` when
  none had anything. Every ``rescan_interval`` it looks for new channels (advertised at
  once, no restart) and for publishers that exited (a warning status in Foxglove, "publisher
  gone"; the channel stays advertised, and a restarted publisher is followed).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import layout as L
from ._optional import missing
from .arrays import ArraySubscriber, decode_array
from .channels import channel_info, list_channels
from .errors import SHMError
from .foxglove_schemas import (
    Mapping,
    json_fits,
    json_of_array,
    json_of_value,
    json_schema_of_dtype,
    json_schema_of_value,
    mapping_for,
)
from .pubsub import Subscriber
from .serialization import get_serializer

if TYPE_CHECKING:
    import foxglove
    import foxglove.websocket

__all__ = ["ChannelStats", "FoxgloveBridge"]

DEFAULT_PORT = 8765
RESCAN_INTERVAL = 0.5
MAX_DRAIN = 256  # messages taken from one channel before the loop looks at the next
BYTES_SCHEMAS = {  # schema and message encoding names for what has no well-known form
    "array": "shm_comm.ndarray",
    "pickle": "shm_comm.pickle",
    "msgpack": "shm_comm.msgpack",
    "raw": "shm_comm.raw",
}
_OUTBOX_FULL = re.compile(r"outbox for client (\S+) full")
_OUTBOX_LOGGER = "foxglove.websocket.connected_client.send_lossy"  # where the SDK says so


def _require_sdk() -> None:
    try:
        import foxglove  # noqa: F401
    except ImportError as exc:
        raise missing("the Foxglove bridge", "foxglove", "foxglove-sdk", exc) from exc


@dataclass
class ChannelStats:
    """What the bridge did with one channel (see the module docstring for each counter)."""

    name: str
    encoding: str  # the channel's: array, pickle, msgpack, raw
    schema: str  # the Foxglove schema name it is served with
    message_encoding: str
    state: str = "live"  # live or gone
    read: int = 0
    sent: int = 0
    missed: int = 0
    unsent: int = 0
    reconnects: int = 0
    subscribed: bool = False


@dataclass
class _Source:
    name: str
    subscriber: Subscriber
    encoding: str
    stats: ChannelStats
    channel: Any  # foxglove.Channel
    encode: Any  # (payload, encoding id, timestamp_ns) -> bytes | None
    spec: tuple[Any, ...]  # what the Foxglove channel was made for (dtype, shape...)
    dropped_base: int = 0  # the observer's "dropped" when the current subscription began
    alive: bool = True
    reconnects: int = 0


@dataclass
class _ClientStats:
    channels: set[int] = field(default_factory=set)
    offered: int = 0


class _OutboxWatch(logging.Handler):
    """Counts the SDK's "outbox for client ADDRESS full" reports (it logs them, throttled)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_address: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            match = _OUTBOX_FULL.search(record.getMessage())
            if match:
                address = match.group(1)
                self.by_address[address] = self.by_address.get(address, 0) + 1


class FoxgloveBridge:
    """Serves shm_comm channels on a Foxglove WebSocket server (module docstring).

    ``channels``: names or glob patterns (``"camera*"``) of pub/sub channels; None serves
    every channel on the machine, including ones that appear later. ``host``/``port``: where
    the server listens (loopback by default; port 0 picks a free one). ``compressed_images``:
    serve images as ``foxglove.CompressedImage`` (JPEG, PNG for depth) instead of
    ``foxglove.RawImage``, for slow links. ``message_backlog_size``: messages the SDK queues
    per client before it drops that client's oldest. Use :meth:`start`/:meth:`stop` or
    ``with``. Methods are not thread-safe, except :meth:`stats` and :meth:`stop`.
    """

    def __init__(self, channels: Sequence[str] | None = None, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, compressed_images: bool = False,
                 jpeg_quality: int = 90, poll_interval: float = 0.002,
                 rescan_interval: float = RESCAN_INTERVAL, message_backlog_size: int = 1024,
                 name: str = "shm_comm") -> None:  # fmt: skip
        if isinstance(channels, str):
            raise TypeError(f"channels must be a list of names or patterns, e.g. [{channels!r}]")
        self.patterns = list(channels) if channels is not None else None
        if self.patterns is not None and not self.patterns:
            raise ValueError("give at least one channel or pattern, or None for every channel")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 to 65535, got {port}")
        if not poll_interval > 0 or not rescan_interval > 0:
            raise ValueError("poll_interval and rescan_interval must be > 0 seconds")
        self.host = host
        self.requested_port = port
        self.compressed_images = compressed_images
        self.jpeg_quality = jpeg_quality
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.message_backlog_size = message_backlog_size
        self.name = name
        self._sources: dict[str, _Source] = {}
        self._failed: dict[str, str] = {}  # channel -> why it cannot be served
        self._lock = threading.Lock()
        self._clients: dict[int, _ClientStats] = {}
        self._subscribers: dict[int, set[int]] = {}  # Foxglove channel id -> client ids
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: foxglove.websocket.WebSocketServer | None = None
        self._context: foxglove.Context | None = None
        self._outbox = _OutboxWatch()
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FoxgloveBridge:
        """Start the server and the reading thread; returns self.

        Raises ImportError without the SDK and OSError-like errors from the SDK if the port
        is taken.
        """
        _require_sdk()
        import foxglove

        if self._thread is not None:
            raise RuntimeError("this bridge already started")
        self._context = foxglove.Context()
        outbox_logger = logging.getLogger(_OUTBOX_LOGGER)
        if outbox_logger.getEffectiveLevel() > logging.INFO:
            outbox_logger.setLevel(logging.INFO)  # the SDK reports a full outbox at INFO
        outbox_logger.addHandler(self._outbox)
        self._server = foxglove.start_server(
            name=self.name, host=self.host, port=self.requested_port,
            context=self._context, server_listener=_listener(self),
            message_backlog_size=self.message_backlog_size,
        )  # fmt: skip
        self._scan()
        self._thread = threading.Thread(target=self._main, name="shm_comm-foxglove",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, close the channels and stop the server. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for source in list(self._sources.values()):
            with contextlib.suppress(Exception):
                source.subscriber.close()
            with contextlib.suppress(Exception):
                source.channel.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        logging.getLogger(_OUTBOX_LOGGER).removeHandler(self._outbox)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> FoxgloveBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the bridge is not running")
        return int(self._server.port)

    @property
    def url(self) -> str:
        """``ws://HOST:PORT``, what Foxglove's "Open connection" asks for."""
        return f"ws://{self.host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """``{"channels": {name: ChannelStats}, "failed": {name: why}, "clients": {id: {...}}}``
        (copies; safe from any thread)."""
        with self._lock:
            channels = {n: ChannelStats(**vars(s.stats)) for n, s in self._sources.items()}
            clients = {cid: {"channels": sorted(self._topic_of(c) for c in st.channels),
                             "offered": st.offered}
                       for cid, st in self._clients.items()}  # fmt: skip
        return {"channels": channels, "failed": dict(self._failed), "clients": clients,
                "outbox_full": dict(self._outbox.by_address)}  # fmt: skip

    def _topic_of(self, channel_id: int) -> str:
        for source in self._sources.values():
            if source.channel.id() == channel_id:
                return source.name
        return str(channel_id)

    # -- subscriptions (SDK threads) -----------------------------------------------------------

    def _subscribed(self, client_id: int, channel_id: int, on: bool) -> None:
        with self._lock:
            client = self._clients.setdefault(client_id, _ClientStats())
            clients = self._subscribers.setdefault(channel_id, set())
            if on:
                client.channels.add(channel_id)
                clients.add(client_id)
            else:
                client.channels.discard(channel_id)
                clients.discard(client_id)

    # -- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            next_scan = time.monotonic() + self.rescan_interval
            while not self._stop.is_set():
                taken = sum(self._poll(source) for source in list(self._sources.values()))
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + self.rescan_interval
                    self._scan()
                if not taken:
                    self._stop.wait(self.poll_interval)
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def _wanted(self, name: str) -> bool:
        if self.patterns is None:
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def _scan(self) -> None:
        """Attach to channels that appeared; notice publishers that exited or came back."""
        present = set()
        for info in list_channels():
            name = info.get("name")
            if not name or info.get("kind") != "pubsub" or not self._wanted(name):
                continue
            present.add(name)
            if name not in self._sources and name not in self._failed:
                with contextlib.suppress(SHMError, OSError):
                    self._attach(name)
        for source in list(self._sources.values()):
            self._check(source, source.name in present)

    def _check(self, source: _Source, present: bool) -> None:
        try:
            stats = source.subscriber.stats()  # also follows a restarted publisher
        except (SHMError, ValueError):
            return
        alive = bool(stats["publisher_alive"]) and present
        if stats["reconnects"] != source.reconnects:
            source.reconnects = stats["reconnects"]
            source.stats.reconnects = source.reconnects
            source.dropped_base = int(stats["dropped"])
            info = channel_info(source.name)
            if info is not None and self._spec_of(source.name, info) != source.spec:
                self._detach(source)  # another dtype or encoding: advertise anew
                with contextlib.suppress(SHMError, OSError):
                    self._attach(source.name)
                return
        if alive != source.alive:
            source.alive = alive
            source.stats.state = "live" if alive else "gone"
            self._status(source, alive)

    def _status(self, source: _Source, alive: bool) -> None:
        import foxglove

        if self._server is None:
            return
        status_id = f"shm_comm-gone-{source.name}"
        if alive:
            self._server.remove_status([status_id])
        else:
            self._server.publish_status(
                f"{source.name}: publisher gone (the channel stays; a restarted publisher is "
                "picked up)", foxglove.StatusLevel.Warning, status_id)  # fmt: skip

    def _spec_of(self, name: str, info: dict[str, Any]) -> tuple[Any, ...]:
        if info["encoding"] != "array":
            return (info["encoding"],)
        with ArraySubscriber(name, observer=True, timeout_connect=0.0) as typed:
            return ("array", typed.dtype, tuple(typed.shape), typed.fixed_shape)

    def _attach(self, name: str) -> None:
        info = channel_info(name)
        if info is None:
            return
        try:
            spec = self._spec_of(name, info)
        except (SHMError, ValueError) as exc:
            self._failed[name] = str(exc)
            return
        subscriber = Subscriber(name, serialization="raw", observer=True, timeout_connect=0.0)
        try:
            channel, encode, stats = self._channel_for(name, spec)
        except BaseException:
            subscriber.close()
            raise
        source = _Source(name, subscriber, spec[0], stats, channel, encode, spec)
        source.alive = bool(info.get("publisher_alive"))
        source.stats.state = "live" if source.alive else "gone"
        with self._lock:
            self._sources[name] = source
        if not source.alive:
            self._status(source, False)

    def _detach(self, source: _Source) -> None:
        with self._lock:
            self._sources.pop(source.name, None)
        with contextlib.suppress(Exception):
            source.subscriber.close()
        with contextlib.suppress(Exception):
            source.channel.close()
        self._status(source, True)

    def _channel_for(self, name: str, spec: tuple[Any, ...]) -> tuple[Any, Any, ChannelStats]:
        """The Foxglove channel for a shm_comm channel, and how to encode its messages."""
        import foxglove

        kind = spec[0]
        ctx = self._context
        if kind == "array":
            dtype, shape = spec[1], spec[2]
            mapping: Mapping | None = mapping_for(name, dtype, shape,
                                                  compressed=self.compressed_images,
                                                  quality=self.jpeg_quality)  # fmt: skip
            if mapping is not None:
                schema = foxglove.Schema(name=mapping.schema_name,
                                         encoding=mapping.schema_encoding,
                                         data=mapping.schema_data)  # fmt: skip
                channel = foxglove.Channel(name, schema=schema,
                                           message_encoding=mapping.message_encoding,
                                           context=ctx)  # fmt: skip
                encode_array = mapping.encode

                def encode_mapped(payload: bytes, _enc: int, stamp: int) -> bytes | None:
                    return encode_array(decode_array(payload)[0], stamp)

                stats = ChannelStats(name, kind, mapping.schema_name, mapping.message_encoding)
                return channel, encode_mapped, stats
            if json_fits(dtype, shape):
                json_schema = json_schema_of_dtype(dtype, shape)
                schema_name = f"shm_comm.{name}"
                channel = foxglove.Channel(name, schema=foxglove.Schema(
                    name=schema_name, encoding="jsonschema",
                    data=json.dumps(json_schema).encode()), message_encoding="json",
                    context=ctx)  # fmt: skip

                def encode_json(payload: bytes, _enc: int, _stamp: int) -> bytes | None:
                    array = decode_array(payload)[0]
                    return json.dumps(json_of_array(array), allow_nan=False,
                                      separators=(",", ":")).encode()  # fmt: skip

                return channel, encode_json, ChannelStats(name, kind, schema_name, "json")
        if kind in ("pickle", "msgpack"):
            return self._dict_channel(name, kind)
        schema_name = BYTES_SCHEMAS.get(kind, f"shm_comm.{kind}")
        data = b""
        if kind == "array":
            data = json.dumps({"dtype": repr(np.lib.format.dtype_to_descr(spec[1])),
                               "shape": list(spec[2]), "fixed": spec[3]}).encode()  # fmt: skip
        channel = foxglove.Channel(name, schema=foxglove.Schema(
            name=schema_name, encoding=schema_name if data else "", data=data),
            message_encoding=schema_name, context=ctx)  # fmt: skip

        def encode_bytes(payload: bytes, _enc: int, _stamp: int) -> bytes | None:
            return payload

        return channel, encode_bytes, ChannelStats(name, kind, schema_name, schema_name)

    def _dict_channel(self, name: str, kind: str) -> tuple[Any, Any, ChannelStats]:
        """Dict messages (pickle, msgpack) as JSON, with a JSON schema from the newest
        message already published (``{"type": "object"}`` if there is none yet)."""
        import foxglove

        serializer = get_serializer(kind)
        schema_name = f"shm_comm.{name}"
        # The schema is derived from the channel's newest message, if there is one.
        schema: dict[str, Any] = {"type": "object"}
        with contextlib.suppress(SHMError, ValueError), Subscriber(
                name, serialization="raw", observer=True, latest=True,
                timeout_connect=0.0) as peek:  # fmt: skip
            payload = peek.recv_bytes(timeout=0)
            if payload is not None and peek.last_encoding in (L.ENCODING_PICKLE,
                                                               L.ENCODING_MSGPACK):
                value = serializer.decode(payload, peek.last_encoding)
                if isinstance(value, dict):
                    schema = json_schema_of_value(value)
        channel = foxglove.Channel(name, schema=foxglove.Schema(
            name=schema_name, encoding="jsonschema", data=json.dumps(schema).encode()),
            message_encoding="json", context=self._context)  # fmt: skip

        def encode_dict(payload: bytes, encoding: int, _stamp: int) -> bytes | None:
            if encoding not in (L.ENCODING_PICKLE, L.ENCODING_MSGPACK):
                return None  # raw bytes on a pickle channel (send_bytes): not JSON
            return json_of_value(serializer.decode(payload, encoding))

        return channel, encode_dict, ChannelStats(name, kind, schema_name, "json")

    def _poll(self, source: _Source) -> int:
        """Forward what waits on one channel while a client subscribes; returns how many."""
        subscribed = bool(source.channel.has_sinks())
        if subscribed and not source.stats.subscribed:
            # A new subscription starts with the newest message already published: what
            # came before is not "missed", nobody was watching. A fresh observer that starts
            # there replaces the idle one.
            try:
                fresh = Subscriber(source.name, serialization="raw", observer=True,
                                   latest=True, timeout_connect=0.0)  # fmt: skip
            except (SHMError, OSError):
                return 0  # the channel is gone for now; the next scan looks again
            source.subscriber.close()
            source.subscriber = fresh
            source.dropped_base = 0
            source.reconnects = 0
        source.stats.subscribed = subscribed
        if not subscribed:
            return 0
        sub = source.subscriber
        taken = 0
        try:
            for _ in range(MAX_DRAIN):
                payload = sub.recv_bytes(timeout=0)
                if payload is None:
                    break
                taken += 1
                self._forward(source, payload)
            if taken:
                source.stats.missed = int(sub.stats()["dropped"]) - source.dropped_base
        except (SHMError, ValueError):
            return taken
        return taken

    def _forward(self, source: _Source, payload: bytes) -> None:
        sub = source.subscriber
        source.stats.read += 1
        stamp = int(sub.last_timestamp_ns)
        try:
            data = source.encode(payload, sub.last_encoding, stamp)
        except (SHMError, ValueError, TypeError):
            data = None
        if data is None:
            source.stats.unsent += 1
            return
        source.channel.log(data, log_time=stamp)
        source.stats.sent += 1
        with self._lock:
            for client_id in self._subscribers.get(source.channel.id(), ()):
                self._clients[client_id].offered += 1


def _listener(bridge: FoxgloveBridge) -> foxglove.websocket.ServerListener:
    """The SDK's server listener: which client subscribes to which channel."""
    from foxglove.websocket import ChannelView, Client, ServerListener

    class Listener(ServerListener):
        def on_subscribe(self, client: Client, channel: ChannelView) -> None:
            bridge._subscribed(int(client.id), int(channel.id), True)

        def on_unsubscribe(self, client: Client, channel: ChannelView) -> None:
            bridge._subscribed(int(client.id), int(channel.id), False)

    return Listener()


def format_status(stats: dict[str, Any]) -> Iterable[str]:
    """Lines for ``shm-comm foxglove``'s periodic report."""
    for name, ch in sorted(stats["channels"].items()):
        watch = "subscribed" if ch.subscribed else "not subscribed"
        yield (f"{name}: {ch.schema} ({ch.message_encoding}), {ch.state}, {watch}: "
               f"{ch.read} read, {ch.sent} sent, {ch.missed} missed, {ch.unsent} unsent")
    for name, why in sorted(stats["failed"].items()):
        yield f"{name}: not served: {why}"
    for address, count in sorted(stats["outbox_full"].items()):
        yield f"client {address}: outbox full {count} time(s): it fell behind, the SDK dropped " \
              "its oldest messages"
