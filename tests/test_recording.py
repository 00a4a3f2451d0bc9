"""Recording to MCAP, loading and replay (shm_comm/recording.py), with real publisher processes.

A publisher process, driven over stdin ("send N [HZ]", "stats", "quit"), publishes four
channels: a structured fixed-shape typed channel, a variable-shape big-endian typed channel,
a pickle channel that also carries raw ``send_bytes`` messages, and a msgpack channel. Every
message is a known function of its index, so the tests check content, order and counts
exactly. Processes are synchronised on printed lines and on ``Recorder.stop()``, which
records everything published before it is called; no test sleeps to wait for another.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import (
    ArraySubscriber,
    Publisher,
    SHMConnectionError,
    SHMFormatError,
    Subscriber,
    channel_info,
    decode_array,
)
from shm_comm import layout as L
from shm_comm.utils import poll_until

pytest.importorskip("mcap")
pytest.importorskip("msgpack")

from mcap.reader import make_reader

from shm_comm.recording import (
    ARRAY_SCHEMA_ENCODING,
    JSON_ENCODING,
    STATS_METADATA,
    Recorder,
    _Entry,
    _in_publish_order,
    load,
    parse_remap,
    play,
    record,
)

pytestmark = pytest.mark.timeout(15)

REC = np.dtype([("t", "<f8"), ("q", "<f4", (3,))])
KINDS = ("arr", "var", "pkl", "mp")

PUBLISHER = r"""
import json, sys, time
import numpy as np
from shm_comm import ArrayPublisher, Publisher
prefix, num_slots = sys.argv[1], int(sys.argv[2])
REC = np.dtype([("t", "<f8"), ("q", "<f4", (3,))])
pubs = {
    "arr": ArrayPublisher(prefix + "_arr", dtype=REC, shape=(2,), num_slots=num_slots),
    "var": ArrayPublisher(prefix + "_var", dtype=">f4", max_shape=(5, 3), num_slots=num_slots),
    "pkl": Publisher(prefix + "_pkl", num_slots=num_slots),
    "mp": Publisher(prefix + "_mp", serialization="msgpack", num_slots=num_slots),
}
def send(i):
    a = np.zeros(2, REC)
    a["t"] = [i, i + 0.5]
    a["q"] = np.arange(6).reshape(2, 3) * i
    pubs["arr"].send(a)
    pubs["var"].send(np.full((i % 5 + 1, 3), i, dtype=">f4"))
    if i % 10 == 9:
        pubs["pkl"].send_bytes(b"raw%d" % i)
    else:
        pubs["pkl"].send({"i": i, "name": f"m{i}", "values": [i, i / 2]})
    pubs["mp"].send({"i": i, "ok": True})
print("READY", flush=True)
n = 0
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "send":
        count, rate = int(cmd[1]), float(cmd[2]) if len(cmd) > 2 else 0.0
        start = time.monotonic()
        for k in range(count):
            if rate:
                time.sleep(max(0.0, start + k / rate - time.monotonic()))
            send(n)
            n += 1
        print("SENT", n, flush=True)
    elif cmd[0] == "stats":
        print("STATS", json.dumps({k: p.stats() for k, p in pubs.items()}), flush=True)
    elif cmd[0] == "quit":
        break
for p in pubs.values():
    p.close()
"""


def expected_arr(i: int) -> np.ndarray[Any, Any]:
    a = np.zeros(2, REC)
    a["t"] = [i, i + 0.5]
    a["q"] = np.arange(6).reshape(2, 3) * i
    return a


def expected_var(i: int) -> np.ndarray[Any, Any]:
    return np.full((i % 5 + 1, 3), i, dtype=">f4")


def expected_pkl(i: int) -> Any:
    return b"raw%d" % i if i % 10 == 9 else {"i": i, "name": f"m{i}", "values": [i, i / 2]}


def expected_mp(i: int) -> Any:
    return {"i": i, "ok": True}


class PublisherProcess:
    """The publisher process above, with its four channel names."""

    def __init__(self, prefix: str, num_slots: int = 64) -> None:
        self.prefix = prefix
        self.names = {kind: f"{prefix}_{kind}" for kind in KINDS}
        self.proc = spawn_python(PUBLISHER, prefix, str(num_slots), stdin=subprocess.PIPE)
        wait_for_line(self.proc, "READY")

    def tell(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return wait_for_line(self.proc, "STATS" if line == "stats" else "SENT")

    def send(self, count: int, rate: float = 0.0) -> None:
        self.tell(f"send {count} {rate}")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.tell("stats").split(" ", 1)[1])
        return result

    def close(self) -> None:
        """Ask the process to close its publishers (removing the segments) and exit."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc)  # kills it if it did not exit; closes the pipes


@pytest.fixture
def publisher(channel: str) -> Iterator[PublisherProcess]:
    proc = PublisherProcess(channel)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def recorded(publisher: PublisherProcess, tmp_path: Path) -> tuple[PublisherProcess, Path]:
    """50 messages per channel recorded from the publisher process."""
    path = tmp_path / "run.mcap"
    with Recorder(list(publisher.names.values()), path) as recorder:
        publisher.send(50)
    assert recorder.stats.messages == 200
    assert recorder.stats.missed == 0
    return publisher, path


# --------------------------------------------------------------------------------------------
# Recording and loading
# --------------------------------------------------------------------------------------------

def test_load_gives_content_order_count_dtype_and_shape(
        recorded: tuple[PublisherProcess, Path]) -> None:
    publisher, path = recorded
    runs = load(path)
    assert list(runs) == list(publisher.names.values())
    arr = runs[publisher.names["arr"]]
    assert arr.encoding == "array"
    assert arr.dtype == REC
    assert arr.shape == (2,)
    assert isinstance(arr.data, np.ndarray)
    assert arr.data.shape == (50, 2)
    assert arr.data.dtype == REC
    assert np.array_equal(arr.data, np.stack([expected_arr(i) for i in range(50)]))
    var = runs[publisher.names["var"]]
    assert var.dtype == np.dtype(">f4")
    assert var.shape == (5, 3)
    assert isinstance(var.data, list)  # shapes differ: not stacked
    for i, got in enumerate(var.data):
        assert got.dtype == np.dtype(">f4")
        assert np.array_equal(got, expected_var(i))
    assert runs[publisher.names["pkl"]].data == [expected_pkl(i) for i in range(50)]
    assert runs[publisher.names["pkl"]].encoding == "pickle"
    assert runs[publisher.names["mp"]].data == [expected_mp(i) for i in range(50)]
    for channel in runs.values():
        assert len(channel) == 50
        assert channel.missed == 0
        assert np.array_equal(channel.seq, np.arange(50))
        assert np.all(np.diff(channel.timestamps_ns) >= 0)
        assert np.all(channel.arrival_ns >= channel.timestamps_ns)
        assert abs(channel.timestamps[0] - channel.timestamps_ns[0] / 1e9) < 1e-6
    only = load(path, [publisher.names["mp"]], decode=False)
    assert list(only) == [publisher.names["mp"]]
    assert only[publisher.names["mp"]].data[0] == bytes.fromhex("82a16900a26f6bc3")


def test_mcap_library_reads_schemas_channels_and_timestamps(
        recorded: tuple[PublisherProcess, Path]) -> None:
    publisher, path = recorded
    with open(path, "rb") as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        assert summary is not None
        assert summary.statistics is not None
        assert summary.statistics.message_count == 200
        channels = {(c.topic, c.message_encoding): c for c in summary.channels.values()}
        names = publisher.names
        assert set(channels) == {
            (names["arr"], "shm_comm.ndarray"), (names["var"], "shm_comm.ndarray"),
            (names["pkl"], "pickle"), (names["pkl"], "raw"), (names["mp"], "msgpack")}
        arr_schema = summary.schemas[channels[names["arr"], "shm_comm.ndarray"].schema_id]
        assert arr_schema.encoding == ARRAY_SCHEMA_ENCODING
        spec = json.loads(arr_schema.data)
        assert np.lib.format.descr_to_dtype(eval(spec["dtype"])) == REC
        assert (spec["shape"], spec["fixed"]) == ([2], True)
        var_schema = summary.schemas[channels[names["var"], "shm_comm.ndarray"].schema_id]
        assert (json.loads(var_schema.data)["shape"], json.loads(var_schema.data)["fixed"]) == (
            [5, 3], False)
        assert channels[names["pkl"], "pickle"].schema_id == 0
        assert channels[names["pkl"], "raw"].metadata["shm_comm.channel_encoding"] == "pickle"
        assert channels[names["mp"], "msgpack"].metadata["shm_comm.num_slots"] == "64"
        counts = dict.fromkeys(channels, 0)
        for _schema, channel, message in reader.iter_messages(log_time_order=False):
            counts[channel.topic, channel.message_encoding] += 1
            assert message.publish_time <= message.log_time
            if channel.message_encoding == "shm_comm.ndarray":
                assert decode_array(message.data)[1].seq == message.sequence
        assert counts[names["pkl"], "raw"] == 5
        assert counts[names["pkl"], "pickle"] == 45
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        stats = json.loads(metadata[STATS_METADATA]["stats"])
        assert stats["channels"][names["arr"]]["messages"] == 50


def test_recording_does_not_perturb_and_counts_what_it_missed(
        channel: str, tmp_path: Path) -> None:
    """A recorder that lags a whole ring behind loses messages itself, counts every one,
    and the publisher sees neither a subscriber nor a drop."""
    publisher = PublisherProcess(channel, num_slots=8)
    try:
        # The loop polls at start, then sleeps 5 s: the burst of 100 overruns its 8 slots.
        recorder = Recorder([publisher.names["pkl"]], tmp_path / "lag.mcap", poll_interval=5.0)
        with recorder:
            publisher.send(100)
            during = publisher.stats()["pkl"]
        stats = recorder.stats.channels[publisher.names["pkl"]]
        after = publisher.stats()["pkl"]
    finally:
        publisher.close()
    assert stats.messages + stats.missed == 100
    assert stats.missed > 0
    assert (during["subscribers"], during["drop_count"]) == (0, 0)
    assert after["drop_count"] == 0
    loaded = load(tmp_path / "lag.mcap")[publisher.names["pkl"]]
    assert loaded.missed == stats.missed
    assert len(loaded) == stats.messages
    assert loaded.seq[-1] == 99
    assert np.all(np.diff(loaded.seq) > 0)
    assert loaded.data == [expected_pkl(int(i)) for i in loaded.seq]


def test_recorder_follows_a_restarted_publisher(channel: str, tmp_path: Path) -> None:
    first = PublisherProcess(channel)
    second: PublisherProcess | None = None
    path = tmp_path / "restart.mcap"
    name = first.names["mp"]
    try:
        with Recorder([name], path) as recorder:
            first.send(10)
            first.proc.kill()  # SIGKILL: the segment stays behind, the publisher is gone
            first.proc.wait(5)
            second = PublisherProcess(channel)  # reclaims the channel
            second.send(7)
            assert poll_until(lambda: recorder.stats.channels[name].reconnects == 1,
                              timeout=5.0, interval=0.01)
        stats = recorder.stats.channels[name]
    finally:
        first.close()
        if second is not None:
            second.close()
    assert (stats.messages, stats.missed, stats.reconnects) == (17, 0, 1)
    loaded = load(path)[name]
    assert list(loaded.seq) == [*range(10), *range(7)]
    assert loaded.data == [expected_mp(i) for i in [*range(10), *range(7)]]


def test_record_function_with_duration_and_stop_event(publisher: PublisherProcess,
                                                      tmp_path: Path) -> None:
    stats = record([publisher.names["mp"]], tmp_path / "short.mcap", duration=0.05)
    assert 0.05 <= stats.duration < 5
    assert stats.messages == 0
    assert "0 missed" in stats.summary()
    done = threading.Event()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(stats=record(
        [publisher.names["mp"]], tmp_path / "event.mcap", stop_event=done,
        timeout_connect=5.0)))
    thread.start()
    try:
        # The file appears once the recorder attached to the channel.
        assert poll_until(lambda: (tmp_path / "event.mcap").exists(), timeout=5.0)
        publisher.send(20)
    finally:
        done.set()
        thread.join(10)
    assert result["stats"].messages == 20
    empty = load(tmp_path / "short.mcap")[publisher.names["mp"]]
    assert len(empty) == 0
    assert empty.data == []


def test_recorder_left_running_finishes_its_file_at_exit(channel: str, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from shm_comm import Publisher\n"
        "from shm_comm.recording import Recorder\n"
        "pub = Publisher(sys.argv[1])\n"
        "Recorder([sys.argv[1]], sys.argv[2]).start()\n"
        "for i in range(10):\n"
        "    pub.send(i)\n"
    )  # and exit without stopping the recorder
    proc = spawn_python(code, channel, str(tmp_path / "exit.mcap"))
    try:
        assert proc.wait(10) == 0
    finally:
        stop(proc)
    assert load(tmp_path / "exit.mcap")[channel].data == list(range(10))


def test_empty_typed_channel_loads_as_an_empty_array(publisher: PublisherProcess,
                                                     tmp_path: Path) -> None:
    record([publisher.names["arr"]], tmp_path / "e.mcap", duration=0.0)
    loaded = load(tmp_path / "e.mcap")[publisher.names["arr"]]
    assert isinstance(loaded.data, np.ndarray)
    assert loaded.data.shape == (0, 2)
    assert loaded.data.dtype == REC


def test_json_compatible_stores_dicts_as_json_and_keeps_the_rest(channel: str,
                                                                 tmp_path: Path) -> None:
    values: list[Any] = [{"i": 1, "xs": [1.5, None, True], "s": "é"}, (1, 2),
                         {"nan": math.nan}, {1: "int key"}, [1, 2], {"i": 2}]
    path = tmp_path / "j.mcap"
    with Publisher(channel) as pub, Recorder([channel], path, json_compatible=True) as rec:
        for value in values:
            pub.send(value)
        pub.send_bytes(b"\x00raw")
    assert rec.stats.channels[channel].as_json == 2
    with open(path, "rb") as stream:
        reader = make_reader(stream)
        encodings = [(c.message_encoding, c.metadata.get("shm_comm.serialization"))
                     for _s, c, _m in reader.iter_messages()]
        summary = reader.get_summary()
        assert summary is not None
        json_channel = next(c for c in summary.channels.values()
                            if c.message_encoding == JSON_ENCODING)
        assert summary.schemas[json_channel.schema_id].encoding == "jsonschema"
    assert encodings == [("json", "pickle"), ("pickle", None), ("pickle", None),
                         ("pickle", None), ("pickle", None), ("json", "pickle"), ("raw", None)]
    loaded = load(path)[channel].data
    assert loaded[0] == values[0]
    assert loaded[1] == (1, 2)
    assert math.isnan(loaded[2]["nan"])
    assert loaded[3:6] == values[3:6]
    assert loaded[6] == b"\x00raw"
    # Replay re-encodes the JSON messages with pickle, the original serializer.
    target = channel + "_r"
    with replaying(path, {channel: target}), Subscriber(target, timeout_connect=10) as sub:
        got = [(sub.recv_bytes(10), sub.last_encoding) for _ in range(len(values) + 1)]
    assert all(payload is not None for payload, _ in got)
    assert [encoding for _, encoding in got] == [L.ENCODING_PICKLE] * 6 + [L.ENCODING_RAW]
    replayed = [pickle.loads(payload) for payload, _ in got[:6] if payload is not None]
    assert math.isnan(replayed[2]["nan"])
    assert replayed[:2] + replayed[3:] == values[:2] + values[3:]


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------

class _Replay:
    """What ``play`` returned (or raised) in its thread."""

    stats: Any = None
    error: BaseException | None = None


@contextmanager
def replaying(path: Path, remap: dict[str, str], **options: Any) -> Iterator[_Replay]:
    """Run ``play`` in a thread that waits for one subscriber per channel; join it on exit."""
    result = _Replay()

    def target() -> None:
        try:
            result.stats = play(path, remap=remap, wait_subscribers=1, **options)
        except BaseException as exc:
            result.error = exc

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield result
    finally:
        stop_event = options.get("stop_event")
        if stop_event is not None:
            stop_event.set()
        thread.join(10)
        assert not thread.is_alive()
    if result.error is not None:
        raise result.error


def test_replay_is_byte_for_byte_with_encodings(recorded: tuple[PublisherProcess, Path]
                                                ) -> None:
    publisher, path = recorded
    raw = load(path, decode=False)
    names = publisher.names
    remap = {name: name + "_r" for name in names.values()}
    with ExitStack() as stack:
        result = stack.enter_context(replaying(path, remap))
        # Typed subscribers first: play() starts once every channel has a subscriber.
        typed = {kind: stack.enter_context(ArraySubscriber(remap[names[kind]], timeout_connect=10))
                 for kind in ("arr", "var")}
        subs = {kind: stack.enter_context(
                    Subscriber(remap[name], serialization="raw", timeout_connect=10))
                for kind, name in names.items()}
        got = {kind: [(sub.recv_bytes(10), sub.last_encoding) for _ in range(50)]
               for kind, sub in subs.items()}
        arrays = {kind: [sub.recv(timeout=10, copy=True) for _ in range(50)]
                  for kind, sub in typed.items()}
        assert (typed["arr"].dtype, typed["arr"].shape, typed["arr"].fixed_shape) == (
            REC, (2,), True)
        assert (typed["var"].dtype, typed["var"].shape, typed["var"].fixed_shape) == (
            np.dtype(">f4"), (5, 3), False)
    assert result.stats.messages == 200
    assert result.stats.channels == dict.fromkeys(remap.values(), 50)
    assert result.stats.passes == 1
    for kind in ("pkl", "mp"):
        assert [payload for payload, _ in got[kind]] == raw[names[kind]].data
    assert [encoding for _, encoding in got["pkl"]] == [
        L.ENCODING_RAW if i % 10 == 9 else L.ENCODING_PICKLE for i in range(50)]
    assert {encoding for _, encoding in got["mp"]} == {L.ENCODING_MSGPACK}
    for i in range(50):
        assert np.array_equal(arrays["arr"][i], expected_arr(i))
        assert np.array_equal(arrays["var"][i], expected_var(i))
        assert arrays["var"][i].dtype == np.dtype(">f4")
    for kind in ("arr", "var"):
        for i, (replayed, original) in enumerate(zip(got[kind], raw[names[kind]].data,
                                                     strict=True)):
            assert replayed[0] is not None
            assert replayed[1] == L.ENCODING_ARRAY
            new, new_header = decode_array(replayed[0])
            old, old_header = decode_array(original)
            assert (new.dtype, new.shape) == (old.dtype, old.shape)
            assert new.tobytes() == old.tobytes()
            # Only the array header's sequence number and timestamp are the replay's own.
            assert new_header.seq == i
            assert new_header.descr == old_header.descr
            assert replayed[0][new_header.data_offset:] == original[old_header.data_offset:]
    for name in remap.values():
        assert channel_info(name) is None  # play() closed its publishers


def test_replay_keeps_timing_scaled_by_rate(publisher: PublisherProcess, tmp_path: Path
                                            ) -> None:
    """Never early (a deadline schedule), and on time give or take a loaded machine."""
    path = tmp_path / "paced.mcap"
    name = publisher.names["mp"]
    with Recorder([name], path):
        publisher.send(60, 100.0)  # 0.6 s at 100 Hz
    recorded = load(path)[name].timestamps_ns
    target = name + "_fast"
    with replaying(path, {name: target}, rate=2.0) as result, Subscriber(
            target, serialization="msgpack", timeout_connect=10) as sub:
        stamps = []
        for i in range(60):
            assert sub.recv(timeout=10) == expected_mp(i)
            stamps.append(sub.last_timestamp_ns)
    due = (recorded - recorded[0]) / 2 / 1e9  # seconds after the first message
    replayed = (np.array(stamps) - stamps[0]) / 1e9
    lateness = replayed - due
    assert lateness.min() > -0.001
    assert np.median(lateness) < 0.02
    span = due[-1]
    assert span == pytest.approx(0.3, rel=0.2)
    assert span - 0.001 < result.stats.duration < span + 0.3


def test_loop_and_stop_event(publisher: PublisherProcess, tmp_path: Path) -> None:
    path = tmp_path / "loop.mcap"
    name = publisher.names["pkl"]
    with Recorder([name], path):
        publisher.send(20, 500.0)
    target = name + "_loop"
    stop_event = threading.Event()
    with replaying(path, {name: target}, loop=True, stop_event=stop_event) as result:
        with Subscriber(target, timeout_connect=10) as sub:
            got = [sub.recv_bytes(10) for _ in range(50)]
        stop_event.set()
    assert result.stats.stopped
    assert result.stats.passes >= 3
    originals = load(path, decode=False)[name].data
    assert got == (originals * 3)[:50]


def test_replay_of_a_channel_whose_publisher_runs_needs_a_remap(
        recorded: tuple[PublisherProcess, Path]) -> None:
    publisher, path = recorded
    with pytest.raises(SHMConnectionError, match="live publisher"):
        play(path, channels=[publisher.names["mp"]])
    with pytest.raises(KeyError, match="no channel"):
        play(path, remap={"nonexistent": "x"})
    with pytest.raises(ValueError, match="one name"):
        play(path, remap={publisher.names["mp"]: "same", publisher.names["pkl"]: "same"})
    with pytest.raises(ValueError, match="rate"):
        play(path, rate=0)


def test_replay_as_fast_as_possible(recorded: tuple[PublisherProcess, Path]) -> None:
    publisher, path = recorded
    name = publisher.names["arr"]
    with replaying(path, {name: name + "_inf"}, rate=math.inf, channels=[name]) as result, \
            ArraySubscriber(name + "_inf", timeout_connect=10) as sub:
        arrays = [sub.recv(timeout=10, copy=True) for _ in range(50)]
    assert result.stats.messages == 50
    assert all(np.array_equal(a, expected_arr(i)) for i, a in enumerate(arrays))


# --------------------------------------------------------------------------------------------
# In one process: ordering, argument checks, errors
# --------------------------------------------------------------------------------------------

def test_publish_order_window_sorts_interleaved_channels() -> None:
    rng = np.random.default_rng(0)
    publish = np.sort(rng.integers(0, 10**9, 2000))
    lag = rng.integers(0, 50_000_000, 2000)  # the recorder took each up to 50 ms later
    order = np.argsort(publish + lag, kind="stable")
    entries = [_Entry("t", "raw", 1, b"", int(publish[i]), int(publish[i] + lag[i]), int(i))
               for i in order]
    out = [e.publish_time for e in _in_publish_order(entries, window_ns=100_000_000)]
    assert out == sorted(out)
    assert len(out) == 2000


def test_parse_remap() -> None:
    assert parse_remap(["imu:imu2", "cam:cam_b"]) == {"imu": "imu2", "cam": "cam_b"}
    for bad in (["imu"], ["a:b:c"], ["a:"], [":b"], ["a/b:c"], ["a:b", "a:c"]):
        with pytest.raises(ValueError):
            parse_remap(bad)


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="list of channel names"):
        Recorder("imu", tmp_path / "x.mcap")
    with pytest.raises(ValueError, match="twice"):
        Recorder(["a", "a"], tmp_path / "x.mcap")
    with pytest.raises(ValueError, match="compression"):
        Recorder(["a"], tmp_path / "x.mcap", compression="gzip")
    with pytest.raises(ValueError, match="poll_interval"):
        Recorder(["a"], tmp_path / "x.mcap", poll_interval=0)


def test_missing_channel_raises_and_creates_no_file(channel: str, tmp_path: Path) -> None:
    with pytest.raises(SHMConnectionError, match="no publisher"):
        record([channel], tmp_path / "none.mcap", duration=1.0, timeout_connect=0.05)
    assert not (tmp_path / "none.mcap").exists()


def test_files_that_are_not_recordings(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    with pytest.raises(SHMFormatError):
        load(junk)
    with pytest.raises(SHMFormatError):
        play(junk)


def test_unfinished_recording_is_a_format_error(recorded: tuple[PublisherProcess, Path],
                                                tmp_path: Path) -> None:
    _, path = recorded
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SHMFormatError, match=r"cut\.mcap"):
        load(cut)
    with pytest.raises(SHMFormatError, match=r"cut\.mcap"):
        play(cut)


def test_load_of_an_unknown_channel(channel: str, tmp_path: Path) -> None:
    with Publisher(channel) as pub, Recorder([channel], tmp_path / "one.mcap"):
        pub.send(1)
    with pytest.raises(KeyError, match="no channel"):
        load(tmp_path / "one.mcap", ["other"])


def test_without_mcap_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mcap", None)
    for call in (lambda: load(tmp_path / "x.mcap"), lambda: play(tmp_path / "x.mcap"),
                 lambda: record(["a"], tmp_path / "x.mcap", duration=0),
                 lambda: Recorder(["a"], tmp_path / "x.mcap")):
        with pytest.raises(ImportError, match=r'pip install -e "\.\[record\]".*pip install mcap'):
            call()
    assert not (tmp_path / "x.mcap").exists()


# --------------------------------------------------------------------------------------------
# Foxglove's well-known schemas: images and point clouds
# --------------------------------------------------------------------------------------------

FOXGLOVE_KINDS = {
    # name suffix: (dtype, shape, fixed, schema, RawImage encoding or point fields)
    "rgb": ("u1", (24, 32, 3), True, "foxglove.RawImage", "rgb8"),
    "rgba": ("u1", (1, 24, 32, 4), True, "foxglove.RawImage", "rgba8"),
    "mono": ("u1", (24, 32), False, "foxglove.RawImage", "mono8"),
    "depth": ("<u2", (24, 32), True, "foxglove.RawImage", "16UC1"),
    "fdepth": ("<f4", (24, 32, 1), True, "foxglove.RawImage", "32FC1"),
    "xyz": ("<f4", (100, 3), False, "foxglove.PointCloud", "x y z"),
    "xyzi": ("<f4", (50, 4), True, "foxglove.PointCloud", "x y z intensity"),
    "other": ("<f8", (100, 3), True, "shm_comm.ndarray", ""),
}


def foxglove_frame(kind: str, i: int) -> np.ndarray:
    dtype, shape, fixed, _schema, _enc = FOXGLOVE_KINDS[kind]
    if not fixed:  # variable shape: each message its own size
        shape = (shape[0] - i % 3, *shape[1:])
    size = int(np.prod(shape))
    return ((np.arange(size) * 7 + i * 13) % 251).astype(dtype).reshape(shape)


def test_images_and_point_clouds_are_recorded_with_foxglove_schemas(channel: str,
                                                                    tmp_path: Path) -> None:
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

    from shm_comm import ArrayPublisher

    names = {kind: f"{channel}_{kind}" for kind in FOXGLOVE_KINDS}
    path = tmp_path / "fox.mcap"
    pubs = {}
    try:
        for kind, (dtype, shape, fixed, _s, _e) in FOXGLOVE_KINDS.items():
            shape_kw = {"shape": shape} if fixed else {"max_shape": shape}
            pubs[kind] = ArrayPublisher(names[kind], dtype=dtype, num_slots=16, **shape_kw)
        with Recorder(list(names.values()), path) as recorder:
            for i in range(5):
                for kind, pub in pubs.items():
                    pub.send(foxglove_frame(kind, i))
        assert recorder.stats.messages == 5 * len(FOXGLOVE_KINDS)
        assert recorder.stats.missed == 0

        # What Foxglove reads: schema names and encodings, messages that decode with
        # Foxglove's own protobuf classes into the published pixels and points.
        with open(path, "rb") as stream:
            reader = make_reader(stream)
            summary = reader.get_summary()
            assert summary is not None
            by_topic = {c.topic: c for c in summary.channels.values()}
            for kind, (_d, _shape, _f, schema_name, _e) in FOXGLOVE_KINDS.items():
                chan = by_topic[names[kind]]
                schema = summary.schemas[chan.schema_id]
                assert schema.name == schema_name, kind
                if schema_name.startswith("foxglove."):
                    assert (schema.encoding, chan.message_encoding) == ("protobuf", "protobuf")
                else:
                    assert chan.message_encoding == "shm_comm.ndarray"
            seen: dict[str, int] = {}
            for _schema, chan, message in reader.iter_messages(log_time_order=False):
                kind = chan.topic[len(channel) + 1:]
                i = seen.get(kind, 0)
                seen[kind] = i + 1
                expected = foxglove_frame(kind, i)
                _d, _shape, _f, schema_name, detail = FOXGLOVE_KINDS[kind]
                if schema_name == "foxglove.RawImage":
                    image = RawImage.FromString(message.data)
                    assert image.encoding == detail
                    pixels = expected.reshape(expected.shape[-3:] if expected.ndim == 4
                                              else expected.shape)
                    assert (image.height, image.width) == pixels.shape[:2]
                    assert image.step == pixels.strides[0]
                    assert image.data == pixels.tobytes()
                    assert image.frame_id == chan.topic
                    stamp = image.timestamp.seconds * 10**9 + image.timestamp.nanos
                    assert stamp == message.publish_time
                elif schema_name == "foxglove.PointCloud":
                    cloud = PointCloud.FromString(message.data)
                    assert [f.name for f in cloud.fields] == detail.split()
                    assert [f.type for f in cloud.fields] == [7] * expected.shape[1]  # FLOAT32
                    assert cloud.point_stride == 4 * expected.shape[1]
                    assert cloud.data == expected.tobytes()
            assert seen == dict.fromkeys(FOXGLOVE_KINDS, 5)

        # load() gives back the exact arrays: dtype, shape, data and the publisher's clock.
        loaded = load(path)
        for kind, (dtype, shape, fixed, _s, _e) in FOXGLOVE_KINDS.items():
            got = loaded[names[kind]]
            assert got.encoding == "array"
            assert got.dtype == np.dtype(dtype)
            frames = [foxglove_frame(kind, i) for i in range(5)]
            if fixed:
                assert isinstance(got.data, np.ndarray)
                assert got.data.shape == (5, *shape)
                assert got.data.dtype == np.dtype(dtype)
                assert np.array_equal(got.data, np.stack(frames))
            else:
                assert [a.shape for a in got.data] == [f.shape for f in frames]
                assert all(np.array_equal(a, f) and a.dtype == f.dtype
                           for a, f in zip(got.data, frames, strict=True))
            assert np.all(np.diff(got.timestamps_ns) >= 0)
            assert list(got.seq) == [0, 1, 2, 3, 4]
        raw = load(path, decode=False)[names["rgb"]]
        assert np.array_equal(raw.timestamps_ns, loaded[names["rgb"]].timestamps_ns)
    finally:
        for pub in pubs.values():
            pub.close()

    # play() publishes the same arrays again through typed channels.
    remap = {names["depth"]: names["depth"] + "_r", names["xyz"]: names["xyz"] + "_r"}
    with replaying(path, remap, channels=list(remap)) as result, \
            ArraySubscriber(remap[names["depth"]], timeout_connect=10) as depth_sub, \
            ArraySubscriber(remap[names["xyz"]], timeout_connect=10) as xyz_sub:
        depth = [depth_sub.recv(timeout=10, copy=True) for _ in range(5)]
        xyz = [xyz_sub.recv(timeout=10, copy=True) for _ in range(5)]
        assert (depth_sub.dtype, depth_sub.shape) == (np.dtype("<u2"), (24, 32))
    assert result.stats.messages == 10
    for i in range(5):
        assert np.array_equal(depth[i], foxglove_frame("depth", i))
        assert np.array_equal(xyz[i], foxglove_frame("xyz", i))


def test_exact_typed_bytes_when_foxglove_schemas_are_off(channel: str, tmp_path: Path) -> None:
    from shm_comm import ArrayPublisher

    path = tmp_path / "exact.mcap"
    with ArrayPublisher(channel, dtype=np.uint8, shape=(8, 8, 3)) as pub, \
            Recorder([channel], path, foxglove_schemas=False):
        pub.send(np.full((8, 8, 3), 9, np.uint8))
    with open(path, "rb") as stream:
        summary = make_reader(stream).get_summary()
        assert summary is not None
        (chan,) = summary.channels.values()
        assert chan.message_encoding == "shm_comm.ndarray"
    assert np.array_equal(load(path)[channel].data[0], np.full((8, 8, 3), 9, np.uint8))
