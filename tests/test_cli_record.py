"""`shm-comm record` and `shm-comm play` end to end, with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import Subscriber
from shm_comm.recording import load

pytest.importorskip("mcap")

PUBLISHER = r"""
import sys, time
from shm_comm import Publisher
from shm_comm.utils import poll_until
with Publisher(sys.argv[1]) as pub:
    print("ready", flush=True)
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
    out = tmp_path / "run.mcap"
    pub = spawn_python(PUBLISHER, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(pub, "ready")
        recorder = subprocess.Popen(
            [sys.executable, "-m", "shm_comm", "record", channel, "-o", str(out),
             "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_line(pub, "done", timeout=30)
            rec_out, rec_err = recorder.communicate(timeout=30)
        finally:
            recorder.kill()
            recorder.wait()
        assert recorder.returncode == 0, rec_err
        assert "recording" in rec_out
        assert pub.stdin is not None
        pub.stdin.close()  # lets the publisher close its channel and exit
        assert pub.wait(20) == 0
    finally:
        stop(pub)
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
