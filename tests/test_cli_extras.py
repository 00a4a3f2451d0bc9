"""`shm-comm record`, `play` and `bridge` end to end, with real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import rest_of_output, spawn_python, stop, wait_for_line

from shm_comm import Subscriber

PUBLISHER = r"""
import sys, time
from shm_comm import Publisher
from shm_comm.utils import poll_until
with Publisher(sys.argv[1]) as pub:
    print("ready", flush=True)
    sys.stdin.readline()  # "go": the recorder is attached
    for i in range(200):
        pub.send({"i": i})
        time.sleep(0.002)
    print("done", flush=True)
    sys.stdin.read()
"""


def shm_comm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shm_comm", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_record_then_play(channel: str, tmp_path: Path) -> None:
    pytest.importorskip("mcap")
    out = tmp_path / "run.mcap"
    pub = spawn_python(PUBLISHER, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(pub, "ready")
        recorder = subprocess.Popen(
            [sys.executable, "-m", "shm_comm", "record", channel, "-o", str(out),
             "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert pub.stdin is not None
        try:
            wait_for_line(recorder, "recording", timeout=30)  # printed once it is attached
            pub.stdin.write("go\n")
            pub.stdin.flush()
            wait_for_line(pub, "done", timeout=30)
            rest_of_output(recorder, timeout=30)
            rec_err = recorder.stderr.read() if recorder.stderr else ""
        finally:
            stop(recorder)
        assert recorder.returncode == 0, rec_err
        pub.stdin.close()  # lets the publisher close its channel and exit
        assert pub.wait(20) == 0
    finally:
        stop(pub)
    from shm_comm.recording import load

    loaded = load(out)[channel]
    values = [m["i"] for m in loaded.data]
    assert values, "nothing recorded"
    assert values == list(range(values[0], values[0] + len(values)))

    replayed = channel + "_again"
    player = subprocess.Popen(
        [sys.executable, "-m", "shm_comm", "play", str(out), "--remap", f"{channel}:{replayed}",
         "--wait-subscribers", "1", "--rate", "4"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        with Subscriber(replayed, timeout_connect=20) as sub:
            got = []
            while len(got) < len(values):
                msg = sub.recv(timeout=10)
                assert msg is not None, f"replay stopped after {len(got)} messages"
                got.append(msg["i"])
        play_out, play_err = player.communicate(timeout=60)
    finally:
        player.kill()
        player.wait()
    assert player.returncode == 0, play_err
    assert got == values
    assert f"published {len(values)} message(s)" in play_out


def test_play_with_a_bad_remap_is_a_usage_error(tmp_path: Path) -> None:
    result = shm_comm("play", str(tmp_path / "missing.mcap"), "--remap", "nocolon")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BRIDGE_PUBLISHER = r"""
import signal, sys, time
import numpy as np
from shm_comm import ArrayPublisher
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with ArrayPublisher(sys.argv[1], shape=(3,), dtype=np.float32) as pub:
    print("ready", flush=True)
    for i in range(12000):  # a minute at most; the test stops it sooner
        pub.send(np.full(3, i, dtype=np.float32))
        time.sleep(0.005)
"""


def test_two_cli_bridges_carry_a_typed_channel(channel: str) -> None:
    """`shm-comm bridge` on two "hosts" over loopback: a typed channel arrives intact."""
    pytest.importorskip("zenoh")
    from shm_comm import ArraySubscriber

    port = free_port()
    prefix = f"test_{channel}"
    pub = spawn_python(BRIDGE_PUBLISHER, channel)
    side_a = subprocess.Popen(
        [sys.executable, "-m", "shm_comm", "bridge", "--export", channel, "--host", "sidea",
         "--prefix", prefix, "--listen", f"tcp/127.0.0.1:{port}", "-i", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    side_b = subprocess.Popen(
        [sys.executable, "-m", "shm_comm", "bridge", "--import", "sidea/*", "--host", "sideb",
         "--prefix", prefix, "--connect", f"tcp/127.0.0.1:{port}", "-i", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(pub, "ready")
        with ArraySubscriber(f"sidea.{channel}", timeout_connect=30) as sub:
            assert (sub.dtype, sub.shape) == (np.dtype(np.float32), (3,))
            values = []
            while len(values) < 20:
                arr = sub.recv(timeout=10)
                assert arr is not None, "the bridged channel went silent"
                assert (arr == arr[0]).all()
                values.append(float(arr[0]))
        assert values == sorted(values)
    finally:
        for proc in (side_b, side_a, pub):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            stop(proc)
    assert side_a.returncode == 143
    assert side_b.returncode == 143
