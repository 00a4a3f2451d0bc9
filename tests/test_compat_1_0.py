"""Code written for shm-comm 1.0 runs here: its public surface, called as a 1.0 user calls it.

Each test is written from 1.0's API reference, README and examples (module paths, positional
arguments, return values, stats keys, the troubleshooting recipes), not from our own API.
docs/migrating.md is the prose version of what these check.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, spawn_python, stop, wait_for_line

import shm_comm
from shm_comm._backend import backend

SHM = Path(backend.SHM_DIR or "/dev/shm")


# --------------------------------------------------------------------------------------------
# Module paths and names
# --------------------------------------------------------------------------------------------

def test_exceptions_module_has_the_same_classes() -> None:
    from shm_comm.exceptions import (
        SHMBufferFullError,
        SHMConnectionError,
        SHMError,
        SHMSerializationError,
        SHMTimeoutError,
    )

    assert SHMError is shm_comm.SHMError is shm_comm.errors.SHMError
    assert SHMConnectionError is shm_comm.SHMConnectionError
    assert SHMTimeoutError is shm_comm.SHMTimeoutError
    assert SHMBufferFullError is shm_comm.SHMBufferFullError
    assert SHMSerializationError is shm_comm.SHMSerializationError
    for cls in (SHMConnectionError, SHMTimeoutError, SHMBufferFullError, SHMSerializationError):
        assert issubclass(cls, SHMError)


def test_patterns_modules_hold_the_same_classes() -> None:
    from shm_comm.patterns import Publisher as P0
    from shm_comm.patterns.pipeline import Puller, Pusher
    from shm_comm.patterns.pubsub import Publisher, Subscriber
    from shm_comm.patterns.reqrep import Replier, Requester

    assert P0 is Publisher is shm_comm.Publisher
    assert (Subscriber, Replier, Requester, Pusher, Puller) == (
        shm_comm.Subscriber, shm_comm.Replier, shm_comm.Requester, shm_comm.Pusher,
        shm_comm.Puller)


def test_version_and_author() -> None:
    assert shm_comm.__version__ == metadata.version("shm-comm-streams")
    assert isinstance(shm_comm.__author__, str)
    assert shm_comm.__author__
    for name in ("Publisher", "Subscriber", "Requester", "Replier", "Pusher", "Puller",
                 "SHMError", "SHMConnectionError", "SHMTimeoutError", "SHMBufferFullError",
                 "SHMSerializationError", "force_unlink", "list_segments"):
        assert name in shm_comm.__all__, name


def test_platform_helpers() -> None:
    from shm_comm.utils import is_linux, is_windows, platform_name

    assert platform_name() == "linux"  # the tested platform
    assert is_linux() is True
    assert is_windows() is False


# --------------------------------------------------------------------------------------------
# serialize
# --------------------------------------------------------------------------------------------

def test_serialize_round_trips() -> None:
    from shm_comm.serialize import deserialize, is_msgpack_available, serialize

    data = serialize({"cmd": "move", "pos": [1.0, 2.0, 3.0]})
    assert isinstance(data, bytes)
    assert pickle.loads(data) == {"cmd": "move", "pos": [1.0, 2.0, 3.0]}
    assert deserialize(data) == {"cmd": "move", "pos": [1.0, 2.0, 3.0]}
    assert deserialize(data, method="pickle") == {"cmd": "move", "pos": [1.0, 2.0, 3.0]}
    arr = np.arange(6.0).reshape(2, 3)
    assert (deserialize(serialize(arr)) == arr).all()
    assert is_msgpack_available() is True  # installed with the test extra
    packed = serialize({"a": [1, 2.5, "x"]}, method="msgpack")
    assert deserialize(packed, method="msgpack") == {"a": [1, 2.5, "x"]}
    # Raw bytes pass through unchanged, whatever the method.
    for method in ("pickle", "msgpack"):
        assert serialize(b"\x00raw", method=method) == b"\x00raw"
        assert serialize(bytearray(b"ab"), method=method) == b"ab"
        assert serialize(memoryview(b"cd"), method=method) == b"cd"


def test_serialize_failures_are_serialization_errors() -> None:
    from shm_comm.exceptions import SHMSerializationError
    from shm_comm.serialize import deserialize, serialize

    with pytest.raises(SHMSerializationError):
        serialize(lambda x: x)  # lambdas cannot be pickled
    with pytest.raises(SHMSerializationError):
        serialize({1, 2}, method="msgpack")  # sets are not msgpack types
    with pytest.raises(SHMSerializationError, match="json"):
        serialize({"a": 1}, method="json")
    with pytest.raises(SHMSerializationError):
        deserialize(b"not a pickle")
    with pytest.raises(SHMSerializationError):
        deserialize(b"\xc1", method="msgpack")  # 0xc1 is never valid msgpack
    with pytest.raises(SHMSerializationError, match="json"):
        deserialize(b"{}", method="json")


def test_serialize_without_msgpack() -> None:
    # A fresh interpreter where msgpack cannot be imported.
    code = (
        "import sys\n"
        "sys.modules['msgpack'] = None\n"
        "from shm_comm.serialize import serialize, is_msgpack_available\n"
        "from shm_comm.exceptions import SHMSerializationError\n"
        "assert is_msgpack_available() is False\n"
        "assert serialize(b'raw', method='msgpack') == b'raw'\n"
        "try:\n"
        "    serialize({'a': 1}, method='msgpack')\n"
        "except SHMSerializationError as exc:\n"
        "    assert 'pip install msgpack' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=str(ROOT))


# --------------------------------------------------------------------------------------------
# Positional arguments, defaults, return values
# --------------------------------------------------------------------------------------------

def test_positional_arguments_in_1_0_order(channel: str) -> None:
    from shm_comm import Publisher, Puller, Pusher, Replier, Requester, Subscriber

    with Publisher(channel, 8, 256, "msgpack") as pub, Subscriber(channel, 2.0, "msgpack") as sub:
        stats = pub.stats()
        assert (stats["num_slots"], stats["slot_size"]) == (8, 256)
        assert pub.send({"x": 1}) is True
        assert sub.recv(1.0) == {"x": 1}
        assert pub.stats()["serialization"] == "msgpack"
    with Replier(channel, 4, 512, "pickle") as rep, Requester(channel, 2.0, "pickle") as req:
        assert (rep.num_slots, rep.slot_size) == (4, 512)
        assert req.send({"q": 1}) is True
        assert rep.recv(1.0) == {"q": 1}
        assert rep.send({"a": 2}) is True
        assert req.recv(1.0) == {"a": 2}
    with Pusher(channel, 16, 1024, "pickle") as push, Puller(channel, 2.0, "pickle") as pull:
        assert (push.num_slots, push.slot_size) == (16, 1024)
        assert push.send("job") is True
        assert pull.recv(1.0) == "job"


def test_defaults_are_1_0s(channel: str) -> None:
    from shm_comm import Publisher, Puller, Pusher, Replier

    with Publisher(channel) as pub:
        assert (pub.num_slots, pub.slot_size) == (64, 4096)
    with Replier(channel) as rep:
        assert (rep.num_slots, rep.slot_size) == (16, 8192)
    with Pusher(channel) as push:
        assert (push.num_slots, push.slot_size) == (128, 4096)
        with Puller(channel) as pull:
            assert pull.recv(timeout=0) is None


def test_newer_options_are_keyword_only(channel: str) -> None:
    from shm_comm import Publisher, Subscriber

    with pytest.raises(TypeError):
        Publisher(channel, 8, 256, "pickle", 4)  # max_subscribers is keyword-only
    with Publisher(channel, 8, 256, "pickle", max_subscribers=4) as pub:
        with pytest.raises(TypeError):
            Subscriber(channel, 2.0, "pickle", True)  # latest is keyword-only
        with Subscriber(channel, 2.0, "pickle", latest=True):
            assert pub.stats()["subscribers"] == 1


def test_send_returns_bool_on_every_end(channel: str) -> None:
    from shm_comm import Publisher, Puller, Pusher, Replier, Requester, Subscriber

    with Publisher(channel) as pub, Subscriber(channel) as sub:
        assert pub.send({"v": 1}) is True
        assert pub.send_bytes(b"raw") is True
        assert sub.recv(timeout=1.0) == {"v": 1}
        assert sub.recv_bytes(timeout=1.0) == b"raw"
    with Replier(channel) as rep:
        with Requester(channel) as req:
            assert req.send("ping") is True
            assert rep.recv(timeout=1.0) == "ping"
            assert rep.send("pong") is True
            assert req.recv(timeout=1.0) == "pong"
            assert req.send_bytes(b"raw ping") is True
            assert rep.recv_bytes(timeout=1.0) == b"raw ping"
            assert rep.send_bytes(b"raw pong") is True
            assert req.recv_bytes(timeout=1.0) == b"raw pong"
            assert req.send("last") is True
            assert rep.recv(timeout=1.0) == "last"
        # The requester left before its reply: 1.0's "False on failure", nothing raised.
        assert rep.send("nobody listens") is False
    with Pusher(channel) as push, Puller(channel) as pull:
        assert push.send({"job": 1}) is True
        assert push.send_bytes(b"job 2") is True
        assert pull.recv(timeout=1.0) == {"job": 1}
        assert pull.recv_bytes(timeout=1.0) == b"job 2"


def test_readme_request_reply_with_a_serving_thread(channel: str) -> None:
    from shm_comm import Replier, Requester
    from shm_comm.exceptions import SHMTimeoutError

    with Replier(channel) as rep, Requester(channel) as req:
        def serve() -> None:
            request = rep.recv(timeout=5.0)
            rep.send({"status": "ok", "echo": request})

        server = threading.Thread(target=serve)
        server.start()
        assert req.request({"command": "get_status"}, timeout=5.0) == {
            "status": "ok", "echo": {"command": "get_status"}}
        server.join()
        with pytest.raises(SHMTimeoutError):
            req.request({"never": "answered"}, timeout=0.1)


# --------------------------------------------------------------------------------------------
# slot_size: 1.0 counted a 4-byte length prefix inside it
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("slot_size", [5, 64, 4096])
def test_everything_that_fitted_1_0_fits(channel: str, slot_size: int) -> None:
    from shm_comm import Publisher, Puller, Pusher, Replier, Requester, Subscriber

    largest_1_0 = b"x" * (slot_size - 4)  # 1.0: payload at most slot_size - 4
    with Publisher(channel, 4, slot_size) as pub, Subscriber(channel) as sub:
        assert pub.send_bytes(largest_1_0) is True
        assert sub.recv_bytes(timeout=1.0) == largest_1_0
        assert pub.send_bytes(b"x" * slot_size) is True  # here the whole slot is payload
        assert sub.recv_bytes(timeout=1.0) == b"x" * slot_size
        with pytest.raises(ValueError, match="slot_size"):
            pub.send_bytes(b"x" * (slot_size + 1))
    with Pusher(channel, 4, slot_size) as push, Puller(channel) as pull:
        assert push.send_bytes(largest_1_0) is True
        assert pull.recv_bytes(timeout=1.0) == largest_1_0
    with Replier(channel, 4, slot_size) as rep, Requester(channel) as req:
        assert req.send_bytes(largest_1_0) is True
        assert rep.recv_bytes(timeout=1.0) == largest_1_0
        assert rep.send_bytes(largest_1_0) is True
        assert req.recv_bytes(timeout=1.0) == largest_1_0


def test_the_1_0_readme_large_message_fits(channel: str) -> None:
    from shm_comm import Publisher, Subscriber

    big = {"data": "x" * 3000}
    with Publisher(channel, slot_size=4096) as pub, Subscriber(channel) as sub:
        pub.send(big)
        assert sub.recv(timeout=1.0) == big


# --------------------------------------------------------------------------------------------
# stats(): 1.0's keys next to ours, one shape per kind
# --------------------------------------------------------------------------------------------

V1_KEYS = {"head", "tail", "num_slots", "slot_size", "msg_count", "drop_count", "used_slots",
           "free_slots"}


def test_pubsub_stats_have_1_0_keys_and_honest_values(channel: str) -> None:
    from shm_comm import Publisher, Subscriber

    with Publisher(channel, 8, 128) as pub:
        empty = pub.stats()
        assert set(empty) >= V1_KEYS
        assert (empty["head"], empty["tail"], empty["used_slots"], empty["free_slots"]) == (
            0, 0, 0, 8)
        with Subscriber(channel) as sub:
            for i in range(3):
                pub.send(i)
            assert sub.recv(timeout=1.0) == 0
            stats = pub.stats()
            assert (stats["head"], stats["tail"], stats["msg_count"]) == (3, 1, 3)
            assert (stats["used_slots"], stats["free_slots"], stats["drop_count"]) == (2, 6, 0)
            mine = sub.stats()
            assert V1_KEYS | {"local_tail"} <= set(mine)
            assert {k: mine[k] for k in V1_KEYS} == {k: stats[k] for k in V1_KEYS}
            assert mine["local_tail"] == 1
            # Overrun: 10 more into 8 slots while the subscriber reads nothing.
            for i in range(10):
                pub.send(i)
            stats = pub.stats()
            assert (stats["head"], stats["used_slots"], stats["free_slots"]) == (13, 8, 0)
            assert stats["drop_count"] == 13 - 1 - 8  # exact: what the subscriber lost
            received = 0
            while sub.recv(timeout=0) is not None:
                received += 1
            assert received == 8
            after = sub.stats()
            assert after["local_tail"] == after["head"] == after["tail"] == 13
            assert (after["used_slots"], after["free_slots"]) == (0, 8)
            assert after["drop_count"] == after["dropped"] == 4


def test_queue_stats_have_1_0_keys(channel: str) -> None:
    from shm_comm import Puller, Pusher

    with Pusher(channel, 4, 64) as push, Puller(channel) as pull:
        for i in range(3):
            push.send(i)
        assert pull.recv(timeout=1.0) == 0
        stats = push.stats()
        assert set(stats) >= V1_KEYS
        assert (stats["head"], stats["tail"], stats["msg_count"]) == (3, 1, 3)
        assert (stats["used_slots"], stats["free_slots"], stats["drop_count"]) == (2, 2, 0)
        mine = pull.stats()
        assert {k: mine[k] for k in V1_KEYS} == {k: stats[k] for k in V1_KEYS}
        assert mine["local_tail"] == 1
        push.send(3)
        push.send(4)
        with pytest.raises(shm_comm.SHMBufferFullError):
            push.send(5, block=False)  # full: refused, never dropped
        assert push.stats()["drop_count"] == 0


def test_one_stats_shape_per_kind(channel: str) -> None:
    from shm_comm import ArrayPublisher, ArraySubscriber, Publisher, Subscriber

    with Publisher(channel) as pub, Subscriber(channel) as sub, Subscriber(
            channel, observer=True) as watcher:
        pub_keys, sub_keys, watch_keys = set(pub.stats()), set(sub.stats()), set(
            watcher.stats())
    typed = channel + "_typed"
    with ArrayPublisher(typed, dtype=np.float32, shape=(3,)) as apub, ArraySubscriber(
            typed) as asub:
        assert set(apub.stats()) == pub_keys
        assert set(asub.stats()) == sub_keys == watch_keys


# --------------------------------------------------------------------------------------------
# Segment names, list_segments, force_unlink
# --------------------------------------------------------------------------------------------

def test_segment_name_helpers_name_the_real_segments(channel: str) -> None:
    from shm_comm import Publisher, Pusher, Replier
    from shm_comm.utils import (
        pub_segment_name,
        push_segment_name,
        rep_segment_name,
        req_segment_name,
    )

    assert pub_segment_name(channel) == f"shmcp_{channel}"
    assert req_segment_name(channel) == rep_segment_name(channel) == f"shmcr_{channel}"
    assert push_segment_name(channel) == f"shmcq_{channel}"
    with Publisher(channel) as pub, Replier(channel) as rep, Pusher(channel) as push:
        assert pub.segment_name == pub_segment_name(channel)
        assert rep.segment_name == req_segment_name(channel)
        assert push.segment_name == push_segment_name(channel)
        names = shm_comm.list_segments()
        for name in (pub_segment_name(channel), rep_segment_name(channel),
                     push_segment_name(channel)):
            assert (SHM / name).exists()
            assert name in names
    long_name = channel + "_" + "x" * 60  # too long for macOS: hashed, still the real name
    with Publisher(long_name) as pub:
        assert pub.segment_name == pub_segment_name(long_name)
        assert len(pub.segment_name) <= 30
    with pytest.raises(ValueError):
        pub_segment_name("robot/pose")  # never worked on Linux in 1.0 either


def test_list_segments_returns_names(channel: str) -> None:
    from shm_comm import Publisher, list_segments
    from shm_comm.utils import list_segments as from_utils

    assert from_utils is list_segments
    with Publisher(channel) as pub:
        names = list_segments()
        assert all(isinstance(name, str) for name in names)
        assert names == sorted(names)
        assert pub.segment_name in names
        mine = [name for name in names if name.startswith(("shmcp_", "shmcr_", "shmcq_"))]
        assert mine == names
        rich = {entry["segment"]: entry for entry in shm_comm.list_channels()}
        assert rich[pub.segment_name]["name"] == channel


def test_force_unlink_leaves_a_live_channel_alone(channel: str) -> None:
    from shm_comm import Publisher, Subscriber, force_unlink
    from shm_comm.utils import pub_segment_name

    with Publisher(channel) as pub, Subscriber(channel) as sub:
        for name in (pub_segment_name(channel), f"shmcomm_pub_{channel}", channel):
            assert force_unlink(name) is False
        assert (SHM / pub.segment_name).exists()
        pub.send("still here")
        assert sub.recv(timeout=1.0) == "still here"
    assert force_unlink(pub_segment_name(channel)) is False  # closed and gone: nothing to do


def test_force_unlink_removes_stale_and_unreadable_segments_only(channel: str) -> None:
    from shm_comm import Subscriber, force_unlink
    from shm_comm.utils import pub_segment_name, push_segment_name, rep_segment_name

    code = ("import os, sys\n"
            "from shm_comm import Publisher, Pusher, Replier\n"
            "p, q, r = Publisher(sys.argv[1]), Pusher(sys.argv[1]), Replier(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = spawn_python(code, channel)
    try:
        wait_for_line(proc, "ready")
        proc.wait(10)
    finally:
        stop(proc)
    for name in (pub_segment_name(channel), push_segment_name(channel),
                 rep_segment_name(channel)):
        assert (SHM / name).exists()
    # 1.0's OS-level names map to the real segments.
    assert force_unlink(f"shmcomm_pub_{channel}") is True
    assert force_unlink(f"shmcomm_push_{channel}") is True
    assert force_unlink(f"shmcomm_req_{channel}") is True
    assert force_unlink(f"shmcomm_rep_{channel}") is False  # the same segment: already gone
    for name in (pub_segment_name(channel), push_segment_name(channel),
                 rep_segment_name(channel)):
        assert not (SHM / name).exists()
    # A corrupted segment of ours (1.0's "invalid magic" case) can be removed ...
    junk = SHM / pub_segment_name(channel)
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(shm_comm.SHMFormatError):
        Subscriber(channel, timeout_connect=0.1)
    assert force_unlink(pub_segment_name(channel)) is True
    assert not junk.exists()
    # ... but nothing that is not a shm_comm segment name is ever touched.
    foreign = SHM / f"other_app_{channel}"
    foreign.write_bytes(b"someone else's")
    try:
        assert force_unlink(foreign.name) is False  # read as channel name: shmcp_other_...
        assert foreign.exists()
        with pytest.raises(ValueError):
            force_unlink(f"shmcp_../{foreign.name}")
        assert foreign.exists()
    finally:
        foreign.unlink()


TROUBLESHOOTING_LOOP = r"""
import json, os, subprocess, sys
from shm_comm import Publisher, force_unlink, list_segments

live = Publisher("live_one")
child = subprocess.run([sys.executable, "-c",
    "import os; from shm_comm import Publisher; p = Publisher('crashed'); os.kill(os.getpid(), 9)"])
with open(os.path.join(os.environ["SHM_COMM_DIR"], "shmcq_corrupt"), "wb") as f:
    f.write(b"garbage")
before = list_segments()
removed = []
for seg in list_segments():        # 1.0's troubleshooting guide, verbatim
    force_unlink(seg)
    print(f"Removed: {seg}")
after = list_segments()
live.send("still works")
print(json.dumps({"before": before, "after": after}))
live.close()
"""


def test_the_1_0_troubleshooting_loop_spares_live_channels(tmp_path: Path) -> None:
    # In a directory of its own (SHM_COMM_DIR), so the loop sees no one else's segments.
    env = dict(os.environ, SHM_COMM_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", TROUBLESHOOTING_LOOP], env=env, text=True,
                            capture_output=True, timeout=60, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["before"] == ["shmcp_crashed", "shmcp_live_one", "shmcq_corrupt"]
    assert report["after"] == ["shmcp_live_one"]
    assert sorted(os.listdir(tmp_path)) == []  # the live one removed itself on close


def test_force_unlink_live_true_removes_only_the_name(channel: str) -> None:
    from shm_comm import Publisher, Subscriber, force_unlink

    with Publisher(channel) as first, Subscriber(channel) as old_sub:
        assert force_unlink(channel, live=True) is True
        assert not (SHM / first.segment_name).exists()
        first.send("on the unnamed segment")
        assert old_sub.recv(timeout=1.0) == "on the unnamed segment"
        with Publisher(channel) as second, Subscriber(channel) as new_sub:
            second.send("on the new one")
            assert new_sub.recv(timeout=1.0) == "on the new one"
            first.close()  # does not remove the successor's name
            assert (SHM / second.segment_name).exists()
            # The old subscriber finds the new publisher once the old one is gone.
            assert old_sub.recv(timeout=5.0) == "on the new one"
            second.send("for both")
            assert new_sub.recv(timeout=1.0) == old_sub.recv(timeout=1.0) == "for both"


# --------------------------------------------------------------------------------------------
# poll_until, FileLock, named_lock
# --------------------------------------------------------------------------------------------

def test_poll_until_with_1_0_arguments() -> None:
    from shm_comm.utils import poll_until

    calls = []
    assert poll_until(lambda: calls.append(1) or len(calls) >= 3, 1.0, 0) is True
    assert poll_until(lambda: None, timeout=0.05, poll_interval=0.001) is None
    assert poll_until(lambda: "x", None) == "x"


def test_file_lock_by_name_between_processes(channel: str) -> None:
    from shm_comm.exceptions import SHMTimeoutError
    from shm_comm.sync import FileLock, named_lock

    name = f"{channel}_jobs"
    code = ("import sys\n"
            "from shm_comm.sync import FileLock\n"
            "lock = FileLock(sys.argv[1])\n"
            "lock.acquire()\n"
            "print('LOCKED', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = spawn_python(code, name, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "LOCKED")
        lock = FileLock(name, timeout=0.1)
        assert lock.timeout == 0.1
        with pytest.raises(SHMTimeoutError):
            lock.acquire()
        with pytest.raises(SHMTimeoutError), named_lock(name, timeout=0.05):
            pass
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)
        with named_lock(name, timeout=5.0) as held:
            assert held.locked
        assert FileLock(name).timeout is None  # 1.0's default: wait without limit
    finally:
        stop(proc)
    path = Path(FileLock(name).path)
    assert path.name == f"{name}.lock"
    folder = path.parent
    assert folder == Path(tempfile.gettempdir()) / f"shm_comm-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    path.unlink()
