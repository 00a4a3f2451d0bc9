"""The Zenoh bridge: wire format and bookkeeping in-process, then two bridges on loopback.

Two bridges in this process stand in for two machines: distinct hosts and a prefix of their
own per test, one listening on ``tcp/127.0.0.1:<free port>`` and the other connecting, with
scouting off. Publishers run in real separate processes. Everything waits on conditions with
deadlines, never on fixed sleeps; every process is killed and reaped in a finally block.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from helpers import SESSION, spawn_python, wait_for_line

from shm_comm import ArrayPublisher, ArraySubscriber, Publisher, SHMFormatError, Subscriber
from shm_comm import layout as L
from shm_comm.bridge import (
    WIRE_HEADER,
    Bridge,
    ChannelDescription,
    SequenceTracker,
    _Runtime,
    bridged_from,
    decode_attachment,
    encode_attachment,
    format_status,
    import_key_expr,
    key_for,
    local_name,
    mark_bridged,
    parse_key,
    split_list,
)
from shm_comm.naming import segment_name
from shm_comm.utils import poll_until

T = TypeVar("T")
SHM = Path("/dev/shm")
DEADLINE = 10.0
pytestmark = pytest.mark.timeout(20)  # each test, including its processes' start-up

# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------

TYPED = ChannelDescription(L.ENCODING_ARRAY, 8, 4096, 32,
                           b'{"type": "ndarray", "dtype": "\'<f8\'", "shape": [8], '
                           b'"fixed": true}')


def test_wire_golden_bytes() -> None:
    """Version 1 of the wire format, byte for byte (a change here needs a new version)."""
    att = encode_attachment(ChannelDescription(L.ENCODING_PICKLE, 64, 4096, 32, b"{}"),
                            L.ENCODING_RAW, 7, 1_700_000_000_123_456_789, 0x1122334455667788)
    assert WIRE_HEADER.size == 44
    assert att.hex() == (
        "53484d42"            # magic b"SHMB"
        "01" "00" "01" "00"   # version 1, encoding raw, channel encoding pickle, flags
        "40000000"            # num_slots 64
        "00100000"            # slot_size 4096
        "2000" "0200"         # max_subscribers 32, metadata_length 2
        "0700000000000000"    # seq 7
        "15cd853dfe9c9717"    # timestamp_ns
        "8877665544332211"    # incarnation
        "7b7d"                # metadata b"{}"
    )


def test_wire_round_trip() -> None:
    att = encode_attachment(TYPED, L.ENCODING_ARRAY, 123, 456, 789)
    message = decode_attachment(att)
    assert message == (L.ENCODING_ARRAY, 123, 456, 789, TYPED)
    assert decode_attachment(att).description is message.description  # cached


def _header(**changes: int | bytes) -> bytes:
    fields: dict[str, Any] = {
        "magic": b"SHMB", "version": 1, "encoding": 0, "channel_encoding": 0, "flags": 0,
        "num_slots": 8, "slot_size": 64, "max_subscribers": 4, "meta_length": 0, "seq": 0,
        "timestamp_ns": 0, "incarnation": 0}
    fields.update(changes)
    return WIRE_HEADER.pack(*fields.values())


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(_header()[:43], id="short"),
    pytest.param(_header(magic=b"SHMX"), id="magic"),
    pytest.param(_header(version=2), id="newer-version"),
    pytest.param(_header(version=0), id="version-0"),
    pytest.param(_header(encoding=9), id="unknown-encoding"),
    pytest.param(_header(channel_encoding=200), id="unknown-channel-encoding"),
    pytest.param(_header(num_slots=0), id="no-slots"),
    pytest.param(_header(num_slots=70000), id="too-many-slots"),
    pytest.param(_header(max_subscribers=0), id="no-subscribers"),
    pytest.param(_header(max_subscribers=65), id="too-many-subscribers"),
    pytest.param(_header(slot_size=2**32 - 1), id="huge-slot"),
    pytest.param(_header(meta_length=5000) + b"x" * 5000, id="metadata-too-long"),
    pytest.param(_header(meta_length=3) + b"xy", id="metadata-truncated"),
    pytest.param(_header(meta_length=1) + b"xy", id="trailing-bytes"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_attachments_raise_format_error(data: bytes) -> None:
    with pytest.raises(SHMFormatError):
        decode_attachment(data)


def test_encode_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="metadata"):
        encode_attachment(TYPED._replace(metadata=b"x" * 5000), 0, 0, 0, 0)
    with pytest.raises(ValueError, match="cannot encode"):
        encode_attachment(TYPED, 0, -1, 0, 0)


def test_sequence_tracker_counts_gaps_duplicates_and_restarts() -> None:
    tracker = SequenceTracker()
    assert tracker.admit(1, 100)  # joins late: no gap for what came before
    assert tracker.admit(1, 101)
    assert tracker.admit(1, 105)  # 102..104 lost
    assert not tracker.admit(1, 105)  # duplicate
    assert not tracker.admit(1, 103)  # older: never re-published out of order
    assert tracker.admit(2, 0)  # the source channel restarted: numbering begins again
    assert tracker.admit(2, 2)
    assert (tracker.lost, tracker.duplicates, tracker.restarts) == (4, 2, 1)


# --------------------------------------------------------------------------------------------
# Names and keys
# --------------------------------------------------------------------------------------------

def test_keys_and_local_names() -> None:
    assert key_for("shm_comm", "lab-pc", "imu") == "shm_comm/lab-pc/imu"
    assert local_name("lab-pc", "cam.left") == "lab-pc.cam.left"
    assert parse_key("shm_comm", "shm_comm/lab-pc/cam.left") == ("lab-pc", "cam.left")
    assert parse_key("a/b", "a/b/h/c") == ("h", "c")
    for bad in ("other/lab-pc/imu", "shm_comm/lab-pc", "shm_comm/a/b/c", "shm_comm/a/..x",
                "shm_comm/-a/imu", "shm_comm/h/" + "x" * 200):
        assert parse_key("shm_comm", bad) is None, bad
    with pytest.raises(ValueError):
        local_name("h", "x" * 199)


@pytest.mark.parametrize(("pattern", "expected"), [
    ("lab-pc/*", "p/lab-pc/*"),
    ("lab-pc", "p/lab-pc/*"),
    ("*/imu", "p/*/imu"),
    ("lab-pc/camera*", "p/lab-pc/camera$*"),
    ("*", "p/*/*"),
    ("**", "p/**/*"),
    ("/lab-pc/imu/", "p/lab-pc/imu"),
])
def test_import_patterns_become_key_expressions(pattern: str, expected: str) -> None:
    assert import_key_expr("p", pattern) == expected


@pytest.mark.parametrize("pattern", ["", "a//b", "a/b?", "a/$b", "a/[ab]", "a/x**", "a/b c",
                                     "a/..b"])
def test_bad_import_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        import_key_expr("p", pattern)


def test_imported_channels_are_marked_in_their_metadata() -> None:
    key = "shm_comm/robot/imu"
    assert bridged_from(mark_bridged(b"", key)) == key
    typed = json.loads(mark_bridged(TYPED.metadata, key))
    assert typed["bridged_from"] == key
    assert typed["shape"] == [8]  # the rest stays as it was
    full = json.dumps({"x": "a" * 4080}).encode()  # no room left for the mark
    for unmarkable in (b"\xff", b"[1, 2]", full):
        assert mark_bridged(unmarkable, key) == unmarkable
        assert bridged_from(unmarkable) is None
    assert bridged_from(TYPED.metadata) is None
    assert bridged_from(b'{"bridged_from": 3}') is None


def test_split_list() -> None:
    assert split_list("imu, joints,camera*") == ["imu", "joints", "camera*"]
    assert split_list(["a,b", "c"]) == ["a", "b", "c"]
    assert split_list(None) == []


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    pytest.importorskip("zenoh")
    with pytest.raises(TypeError, match="list of patterns"):
        Bridge(export="imu")
    with pytest.raises(ValueError, match="endpoint"):
        Bridge(connect=["127.0.0.1:7447"])
    with pytest.raises(ValueError, match="host"):
        Bridge(host="lab/pc")
    with pytest.raises(ValueError, match="prefix"):
        Bridge(prefix="a/*")
    with pytest.raises(ValueError, match="import pattern"):
        Bridge(import_=["a/b?"])
    with pytest.raises(ValueError, match="rescan_interval"):
        Bridge(rescan_interval=0)
    with pytest.raises(ValueError, match="invalid Zenoh configuration"):
        Bridge(config={"no/such/setting": 1}).start()


def test_missing_zenoh_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_zenoh(name: str, package: str | None = None) -> Any:
        if name == "zenoh":
            raise ModuleNotFoundError("No module named 'zenoh'", name="zenoh")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_zenoh)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[bridge\]".*eclipse-zenoh'):
        Bridge(export=["imu"])


# --------------------------------------------------------------------------------------------
# The importing side in-process (no network): messages fed to the Zenoh callback
# --------------------------------------------------------------------------------------------

class _NoLink:
    def close(self) -> None:
        pass


@pytest.fixture
def importer() -> Iterator[_Runtime]:
    runtime = _Runtime(_NoLink(), export=[], host="here", prefix="p",  # type: ignore[arg-type]
                       rescan_interval=1.0, poll_interval=None, express=True,
                       max_channel_bytes=1 << 24, permissions=0o600)
    try:
        yield runtime
    finally:
        runtime.stop()


def _typed_payload(values: np.ndarray[Any, Any]) -> bytes:
    """A typed-array payload as an ArrayPublisher writes it."""
    descr = repr(np.lib.format.dtype_to_descr(values.dtype))
    buf = bytearray(L.array_header_size(values.ndim, len(descr)) + values.nbytes)
    offset = L.pack_array_header(memoryview(buf), 0, descr, values.shape, 0, 0)
    buf[offset:] = values.tobytes()
    return bytes(buf)


def test_import_creates_a_typed_twin_and_keeps_order(channel: str, importer: _Runtime) -> None:
    key = f"p/{SESSION}h/{channel}"
    name = f"{SESSION}h.{channel}"

    def feed(seq: int, value: float, incarnation: int = 1,
             description: ChannelDescription = TYPED, shape: int = 8) -> None:
        importer.on_sample(key, _typed_payload(np.full(shape, value)),
                           encode_attachment(description, L.ENCODING_ARRAY, seq, 1000 + seq,
                                             incarnation))

    feed(10, 1.0)
    with ArraySubscriber(name) as sub:
        assert (sub.dtype, sub.shape) == (np.dtype(np.float64), (8,))
        feed(11, 2.0)
        feed(11, 9.0)  # duplicate: dropped
        feed(9, 9.0)  # older: dropped
        feed(14, 3.0)  # 12 and 13 lost
        got = [sub.recv(timeout=1, copy=True) for _ in range(2)]
        assert [float(a[0]) for a in got if a is not None] == [2.0, 3.0]
        assert sub.last_timestamp_ns == 1014  # the remote publisher's timestamp
        feed(0, 4.0, incarnation=2)  # remote publisher restarted, same description
        arr = sub.recv(timeout=1)
        assert arr is not None
        assert arr[0] == 4.0
        assert sub.stats()["reconnects"] == 0  # the local channel stayed
        stats = importer.imports[name].stats()
        assert (stats["messages"], stats["drops"], stats["duplicates"],
                stats["remote_restarts"]) == (4, 2, 2, 1)
        assert stats["latency_samples"] == 4
        # The remote channel came back with another shape: the twin is recreated and the
        # local subscriber follows it like any publisher restart.
        narrower = TYPED._replace(metadata=TYPED.metadata.replace(b"[8]", b"[4]"))
        feed(0, 5.0, incarnation=3, description=narrower, shape=4)
        arr = _next(lambda: sub.recv(timeout=0.05, copy=True), "the recreated channel")
        assert arr.shape == sub.shape == (4,)
        assert arr[0] == 5.0
        assert importer.imports[name].stats()["recreated"] == 1


def test_import_rejects_what_it_cannot_republish(channel: str, importer: _Runtime) -> None:
    host = f"{SESSION}h"
    small = ChannelDescription(L.ENCODING_RAW, 4, 16, 4)
    importer.on_sample(f"p/{host}/{channel}", b"x" * 17, encode_attachment(small, 0, 0, 0, 1))
    name = f"{host}.{channel}"
    assert importer.imports[name].stats()["rejected"] == 1  # larger than the slot it announced
    importer.on_sample(f"p/{host}/{channel}", b"x", None)  # no bridge header
    importer.on_sample(f"p/{host}/{channel}", b"x", b"garbage")
    importer.on_sample("p/not-a-bridge-key", b"x", encode_attachment(small, 0, 0, 0, 1))
    assert importer.rejected == 3
    huge = ChannelDescription(L.ENCODING_RAW, 64, 1 << 20, 4)
    importer.on_sample(f"p/{host}/{channel}x", b"x", encode_attachment(huge, 0, 0, 0, 1))
    assert "max_channel_bytes" in importer.imports[f"{name}x"].stats()["last_error"]
    # Two keys that map to one local name: the second is refused, not mixed in.
    importer.on_sample(f"p/{host}.{channel}/y", b"x", encode_attachment(small, 0, 0, 0, 1))
    importer.on_sample(f"p/{host}/{channel}.y", b"x", encode_attachment(small, 0, 0, 0, 1))
    assert "already used" in str(importer.last_error)
    with Publisher(f"{host}.{channel}.z"):  # a live local channel already has the name
        importer.on_sample(f"p/{host}/{channel}.z", b"x", encode_attachment(small, 0, 0, 0, 1))
        assert "live publisher" in importer.imports[f"{name}.z"].stats()["last_error"]


# --------------------------------------------------------------------------------------------
# Two bridges on loopback
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _zenoh_files_of(pid: int | str = "self") -> set[str]:
    """``/dev/shm/*.zenoh`` files a process maps or holds open (zenoh's SHM transport)."""
    found: set[str] = set()
    for listing in (f"/proc/{pid}/maps", f"/proc/{pid}/fd"):
        try:
            if listing.endswith("maps"):
                with open(listing) as lines:
                    paths = [line.split(maxsplit=5)[-1].strip() for line in lines]
            else:
                paths = [os.readlink(f"{listing}/{fd}") for fd in os.listdir(listing)]
        except OSError:
            continue
        found.update(os.path.basename(p) for p in paths
                     if p.startswith("/dev/shm/") and p.endswith(".zenoh"))
    return found


@pytest.fixture
def net() -> Iterator[dict[str, Any]]:
    """Endpoints, hosts and a prefix of this test's own; checks Zenoh left no files."""
    pytest.importorskip("zenoh")
    port = _free_port()
    token = secrets.token_hex(3)
    info = {"listen": [f"tcp/127.0.0.1:{port}"], "connect": [f"tcp/127.0.0.1:{port}"],
            "a": f"a{token}", "b": f"b{token}", "prefix": f"test_{SESSION}_{token}"}
    before = {p.name for p in SHM.glob("*.zenoh")} if SHM.is_dir() else set()
    yield info
    ours = _zenoh_files_of() - before
    for name in ours:  # exact names we mapped and that did not exist before
        (SHM / name).unlink(missing_ok=True)
    assert not ours, f"zenoh left files in /dev/shm: {sorted(ours)}"


def _exporter(net: dict[str, Any], channels: list[str], **kw: Any) -> Bridge:
    return Bridge(export=channels, listen=net["listen"], host=net["a"], prefix=net["prefix"],
                  **kw).start()


def _importer(net: dict[str, Any], **kw: Any) -> Bridge:
    return Bridge(import_=[f"{net['a']}/*"], connect=net["connect"], host=net["b"],
                  prefix=net["prefix"], **kw).start()


def _until(predicate: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    result = poll_until(predicate, timeout=timeout, interval=0.005)
    assert result, f"{what} did not happen within {timeout} s"
    return result


def _next(receive: Callable[[], T | None], what: str,
          accept: Callable[[T], bool] = lambda item: True) -> T:
    """Receive (each call waits a little) until an accepted item arrives; fail at DEADLINE."""
    def good() -> list[T] | None:  # boxed: an array has no truth value
        item = receive()
        return [item] if item is not None and accept(item) else None

    return _until(good, what)[0]


# A typed publisher in its own process, driven over stdin. Message k is the float64 array
# k + arange(8), so every received array checks itself.
COMMANDED_PUBLISHER = r"""
import sys
import numpy as np
from shm_comm import ArrayPublisher
pub = ArrayPublisher(sys.argv[1], dtype=np.float64, shape=(8,), num_slots=int(sys.argv[2]))
base = np.arange(8, dtype=np.float64)
k = 0
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "send":
        for _ in range(int(cmd[1])):
            pub.send(base + k)
            k += 1
        print("sent", k, flush=True)
    else:
        break
pub.close()
"""

# A publisher streaming array [base + k, pid] every `period` seconds until stdin closes.
# "count" on stdin answers with the number of the last message published so far.
STREAMER = r"""
import os, select, sys
import numpy as np
from shm_comm import ArrayPublisher
name, base, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pub = ArrayPublisher(name, dtype=np.int64, shape=(2,), num_slots=64)
print("ready", flush=True)
k = 0
while True:
    if select.select([sys.stdin], [], [], period)[0]:  # (the timeout is the stream's rate)
        if not sys.stdin.readline():
            break
        print("count", base + k - 1, flush=True)
        continue
    pub.send(np.array([base + k, os.getpid()], dtype=np.int64))
    k += 1
pub.close()
"""

# A bridge in its own process, so that it can be killed.
BRIDGE_PROCESS = r"""
import json, sys
from shm_comm.bridge import Bridge
bridge = Bridge(**json.loads(sys.argv[1])).start()
print("ready", flush=True)
sys.stdin.readline()
bridge.stop()
"""


def _end(proc: subprocess.Popen[str]) -> None:
    """Ask ``proc`` to finish (stdin closed), kill it if it does not, close its pipes."""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass  # it died with unread input
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(code, *args)``: a Python process driven over stdin, once it printed "ready"."""
    procs: list[subprocess.Popen[str]] = []

    def start(code: str, *args: str) -> subprocess.Popen[str]:
        proc = spawn_python(code, *args, stdin=subprocess.PIPE)
        procs.append(proc)
        wait_for_line(proc, "ready")
        return proc

    yield start
    for proc in procs:
        _end(proc)


def _command(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return wait_for_line(proc, "sent")


def test_typed_channel_content_order_and_counted_drops(channel: str, net: dict[str, Any],
                                                       spawn: Spawn) -> None:
    """Every message published on side A is received in order on side B or counted lost."""
    proc = spawn(COMMANDED_PUBLISHER, channel, "8")
    side_a = side_b = sub = None
    try:
        side_a = _exporter(net, [channel])
        side_b = _importer(net)
        assert channel in side_a.stats()["exported"]  # exported by start() already
        name = f"{net['a']}.{channel}"

        def arrived() -> bool:
            _command(proc, "send 1")
            return poll_until(lambda: name in side_b.stats()["imported"], 0.2, 0.005) or False

        _until(arrived, "the first message crossing the bridge")
        sub = ArraySubscriber(name)
        assert (sub.dtype, sub.shape, sub.fixed_shape) == (np.dtype(np.float64), (8,), True)

        received: list[int] = []

        def receive_newest() -> int:
            """Publish one more message and receive until it (or a later one) arrives."""
            while True:
                newest = int(_command(proc, "send 1").split()[1]) - 1
                while (arr := sub.recv(timeout=0.5)) is not None:
                    k = int(arr[0])
                    np.testing.assert_array_equal(arr, np.arange(8) + k)
                    received.append(k)
                    if k >= newest:
                        return k
                # That one was lost on the way: the next one tells us what became of it.

        first = receive_newest()
        lost_before = side_b.stats()["imported"][name]["drops"]
        dropped_before = sub.stats()["dropped"]
        exporter_drops_before = side_a.stats()["exported"][channel]["drops"]
        received.clear()
        _command(proc, "send 3000")  # into an 8-slot ring, much faster than the bridge sends
        last = receive_newest()
        assert received == sorted(set(received)), "out of order or duplicated"
        lost = side_b.stats()["imported"][name]["drops"] - lost_before
        dropped = sub.stats()["dropped"] - dropped_before
        exporter_drops = side_a.stats()["exported"][channel]["drops"] - exporter_drops_before
        missing = (last - first) - len(received)
        assert missing == lost + dropped, (missing, lost, dropped)
        assert exporter_drops > 0, "the burst should have overrun the bridge's observer"
        assert lost >= exporter_drops  # what the exporter missed shows up as gaps at B
        stats = side_b.stats()["imported"][name]
        assert stats["latency_p50"] is not None
        assert 0 <= stats["latency_p50"] < 1.0
    finally:
        if sub is not None:
            sub.close()
        for side in (side_b, side_a):
            if side is not None:
                side.stop()


def test_large_arrays_and_pickled_messages_cross_intact(channel: str,
                                                        net: dict[str, Any]) -> None:
    frames = ArrayPublisher(f"{channel}_frames", dtype=np.uint8, shape=(1024, 1024), num_slots=4)
    poses = Publisher(f"{channel}_poses")
    rng = np.random.default_rng(7)
    images = [rng.integers(1, 255, (1024, 1024), dtype=np.uint8) for _ in range(3)]
    blank = np.zeros((1024, 1024), dtype=np.uint8)  # warm-up frames, told apart by content
    side_a = _exporter(net, [f"{channel}_*"])
    side_b = _importer(net)
    subs: list[Any] = []
    try:
        names = {f"{net['a']}.{channel}_frames", f"{net['a']}.{channel}_poses"}

        def arrived() -> bool:
            frames.send(blank)
            poses.send("warm-up")
            return poll_until(lambda: set(side_b.stats()["imported"]) == names, 0.3,
                              0.01) or False

        _until(arrived, "both channels crossing the bridge")
        frames_b = ArraySubscriber(f"{net['a']}.{channel}_frames")
        poses_b = Subscriber(f"{net['a']}.{channel}_poses")
        subs += [frames_b, poses_b]
        for i, image in enumerate(images):
            frames.send(image)
            poses.send({"i": i, "xyz": (1.0, 2.0, 3.0)})
            got = _next(lambda: frames_b.recv(timeout=0.1, copy=True), "a frame",
                        accept=lambda a: bool(a.any()))
            assert got.shape == (1024, 1024)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, image)
            pose = _next(lambda: poses_b.recv(timeout=0.1), "a pose",
                         accept=lambda m: m != "warm-up")
            assert pose == {"i": i, "xyz": (1.0, 2.0, 3.0)}
        assert side_b.stats()["imported"][f"{net['a']}.{channel}_frames"]["drops"] == 0
    finally:
        for sub in subs:
            sub.close()
        side_b.stop()
        side_a.stop()
        frames.close()
        poses.close()


def test_channels_appearing_later_are_exported_and_imports_never_loop(
        channel: str, net: dict[str, Any]) -> None:
    pattern = f"*{channel}*"  # also matches the imported copy "<host>.<channel>"
    side_a = Bridge(export=[pattern], import_=[f"{net['b']}/*"], listen=net["listen"],
                    host=net["a"], prefix=net["prefix"], rescan_interval=0.05).start()
    side_b = Bridge(export=[pattern], import_=[f"{net['a']}/*"], connect=net["connect"],
                    host=net["b"], prefix=net["prefix"], rescan_interval=0.05).start()
    pub = None
    try:
        assert side_a.stats()["exported"] == {}
        pub = Publisher(channel)  # after both bridges started
        _until(lambda: channel in side_a.stats()["exported"], "the rescan picking it up")
        name = f"{net['a']}.{channel}"

        def arrived() -> bool:
            pub.send("hello")
            return poll_until(lambda: name in side_b.stats()["imported"], 0.2, 0.005) or False

        _until(arrived, "the channel crossing the bridge")
        with Subscriber(name) as sub:
            pub.send("world")
            assert sub.recv(timeout=DEADLINE) == "world"
        # Both "machines" share this machine's channels, so B also exports the original and
        # A imports it back as "<b>.<channel>": the steady state. Imported channels (marked
        # in their metadata) are exported by neither bridge, however often they rescan.
        back = f"{net['b']}.{channel}"

        def back_at_a() -> bool:
            pub.send("again")  # B exports only what is published after it attached
            return poll_until(lambda: back in side_a.stats()["imported"], 0.2, 0.005) or False

        _until(back_at_a, "B's export of the original reaching A")
        side_a.rescan()
        side_b.rescan()
        stats_a, stats_b = side_a.stats(), side_b.stats()
        assert set(stats_a["exported"]) == set(stats_b["exported"]) == {channel}
        assert set(stats_a["imported"]) == {back}
        assert set(stats_b["imported"]) == {name}
        assert stats_a["peers"] == stats_b["peers"] == 1
        lines = format_status(stats_b)
        assert lines[0].startswith(f"bridge {net['b']} (prefix {net['prefix']}): 1 peer(s)")
        assert any(line.startswith(f"  import {net['prefix']}/{net['a']}/{channel} -> {name}")
                   for line in lines), lines
    finally:
        side_b.stop()
        side_a.stop()
        if pub is not None:
            pub.close()


# Two bridges and a publisher in one process that exits without stopping anything.
EXIT_WITHOUT_STOP = r"""
import json, sys, time
from shm_comm import Publisher
from shm_comm.bridge import Bridge
net, channel = json.loads(sys.argv[1]), sys.argv[2]
pub = Publisher(channel)
a = Bridge(export=[channel], listen=net["listen"], host=net["a"], prefix=net["prefix"]).start()
b = Bridge(import_=[net["a"] + "/*"], connect=net["connect"], host=net["b"],
           prefix=net["prefix"]).start()
deadline = time.monotonic() + 10
while net["a"] + "." + channel not in b.stats()["imported"] and time.monotonic() < deadline:
    pub.send("x")
    time.sleep(0.01)  # the publisher's rate, not a synchronisation
print("imported" if time.monotonic() < deadline else "timeout", flush=True)
"""


def test_a_process_exiting_without_stop_ends_cleanly(channel: str, net: dict[str, Any]) -> None:
    """Zenoh's threads must not keep the interpreter alive, nor ours crash at exit."""
    proc = spawn_python(EXIT_WITHOUT_STOP, json.dumps(net), channel)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.split() == ["imported"]
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    for name in (channel, f"{net['a']}.{channel}"):  # both channels removed at exit
        assert not (SHM / segment_name("pubsub", name)).exists()


def _published(streamer: subprocess.Popen[str]) -> int:
    """The number of the last message ``streamer`` has published: later ones are higher."""
    assert streamer.stdin is not None
    streamer.stdin.write("count\n")
    streamer.stdin.flush()
    return int(wait_for_line(streamer, "count").split()[1])


def _newer(sub: ArraySubscriber, than: int, what: str) -> int:
    """Receive until a streamed message numbered above ``than`` arrives; its number."""
    arr = _next(lambda: sub.recv(timeout=0.1, copy=True), what, lambda a: int(a[0]) > than)
    return int(arr[0])


def test_recovery_from_publisher_bridge_and_network_restarts(channel: str, net: dict[str, Any],
                                                             spawn: Spawn) -> None:
    """Nothing local restarts: the subscriber on side B keeps the same object throughout."""
    name = f"{net['a']}.{channel}"
    side_b = _importer(net)  # connecting before anyone listens: it retries
    side_a = sub = None
    try:
        streamer = spawn(STREAMER, channel, "0", "0.005")
        side_a = _exporter(net, [channel])
        _until(lambda: name in side_b.stats()["imported"], "the first message crossing")
        sub = ArraySubscriber(name)
        _newer(sub, -1, "a message")

        # The remote publisher is killed and another one takes over the channel.
        streamer.kill()  # its segment stays behind; the new publisher reclaims it
        streamer.wait()
        streamer = spawn(STREAMER, channel, "1000000", "0.005")
        _newer(sub, 999_999, "the new publisher's data")
        assert sub.stats()["reconnects"] == 0  # the local channel persisted
        assert side_b.stats()["imported"][name]["remote_restarts"] >= 1

        # The exporting bridge (and with it the network link) goes away and comes back.
        # Messages numbered above what was published once it had stopped prove the new path.
        side_a.stop()
        before = _published(streamer)
        side_a = _exporter(net, [channel])
        _newer(sub, before, "data after the exporter restarted")
        assert sub.stats()["reconnects"] == 0

        # The importing bridge restarts: the local channel is recreated and the subscriber
        # follows it as it follows any publisher restart.
        side_b.stop()
        before = _published(streamer)
        side_b = _importer(net)
        _newer(sub, before, "data after the importer restarted")
        assert sub.stats()["reconnects"] == 1
    finally:
        if sub is not None:
            sub.close()
        side_b.stop()
        if side_a is not None:
            side_a.stop()


def test_killed_bridge_processes_recover(channel: str, net: dict[str, Any],
                                        spawn: Spawn) -> None:
    """SIGKILLed bridges on both sides; the killed importer's stale channel is reclaimed."""
    name = f"{net['a']}.{channel}"
    a_args = json.dumps({"export": [channel], "listen": net["listen"], "host": net["a"],
                         "prefix": net["prefix"]})
    b_args = json.dumps({"import_": [f"{net['a']}/*"], "connect": net["connect"],
                         "host": net["b"], "prefix": net["prefix"]})
    sub = None

    def kill(proc: subprocess.Popen[str]) -> None:
        assert not _zenoh_files_of(proc.pid)
        proc.kill()
        proc.wait()

    try:
        streamer = spawn(STREAMER, channel, "0", "0.005")
        side_a, side_b = spawn(BRIDGE_PROCESS, a_args), spawn(BRIDGE_PROCESS, b_args)
        sub = ArraySubscriber(name, timeout_connect=DEADLINE)
        _newer(sub, -1, "a message")

        kill(side_a)
        before = _published(streamer)
        side_a = spawn(BRIDGE_PROCESS, a_args)
        _newer(sub, before, "data after the exporter was killed")

        kill(side_b)  # leaves the imported channel's segment behind, its owner dead
        before = _published(streamer)
        side_b = spawn(BRIDGE_PROCESS, b_args)  # reclaims the stale segment
        _newer(sub, before, "data after the importer was killed")
        assert sub.stats()["reconnects"] == 1
        for proc in (side_a, side_b):  # orderly stop: the importer removes its channel
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=DEADLINE) == 0
    finally:
        if sub is not None:
            sub.close()
