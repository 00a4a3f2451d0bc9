"""shm-comm 1.0's example command lines, run as real processes against this package.

``simple_pubsub.py publisher|subscriber``, ``numpy_sharing.py publisher|subscriber``,
``reqrep_example.py server|client``, ``command_executor.py`` + ``command_sender.py`` (our
examples, written with 1.0's API only), and a program doing what 1.0's ``benchmark.py
--quick`` does, written as a 1.0 user would. Each run uses a channel of its own
(``--channel``) so that runs on the same machine do not meet; Ctrl-C stops the long-running
roles, which must then exit cleanly and leave nothing in /dev/shm.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, remaining_lines, wait_for_line

from shm_comm._backend import backend
from shm_comm.utils import pub_segment_name, push_segment_name, rep_segment_name

EXAMPLES = ROOT / "examples"
SHM = Path(backend.SHM_DIR or "/dev/shm")


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT ignored; Ctrl-C must reach it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(script: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """Start ``python examples/script args...`` with line-buffered text pipes."""
    return subprocess.Popen([sys.executable, "-u", str(EXAMPLES / script), *args],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT), preexec_fn=_default_sigint)


def interrupt(proc: subprocess.Popen[str], timeout: float = 15.0) -> tuple[int, str, str]:
    """Ctrl-C ``proc``; its exit status and the output it printed after the lines already
    read by ``wait_for_line``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} ignored Ctrl-C") from None
    assert proc.stderr is not None
    assert proc.stdout is not None
    err = proc.stderr.read()
    out = "".join(remaining_lines(proc))  # all of it: the reader thread saw the end
    proc.stderr.close()
    proc.stdout.close()
    return proc.returncode, out, err


def lines_starting(proc: subprocess.Popen[str], prefix: str, count: int) -> list[str]:
    return [wait_for_line(proc, prefix) for _ in range(count)]


def test_simple_pubsub_publisher_and_subscribers(channel: str) -> None:
    pub = start("simple_pubsub.py", "publisher", "--channel", channel)
    subs: list[subprocess.Popen[str]] = []
    try:
        wait_for_line(pub, "publishing poses")
        subs = [start("simple_pubsub.py", "subscriber", "--channel", channel) for _ in range(2)]
        for sub in subs:
            got = lines_starting(sub, "got #", 3)
            seqs = [int(line.split("#")[1].split(":")[0]) for line in got]
            assert seqs == list(range(seqs[0], seqs[0] + 3))  # in order, none lost
    finally:
        results = [interrupt(proc) for proc in (*subs, pub)]
    for code, _out, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    assert "subscribers lost 0" in results[-1][1]
    assert not (SHM / pub_segment_name(channel)).exists()


def test_numpy_sharing_publisher_and_subscriber(channel: str) -> None:
    pub = start("numpy_sharing.py", "publisher", "--channel", channel)
    sub = None
    try:
        wait_for_line(pub, "publishing 6 float64")
        sub = start("numpy_sharing.py", "subscriber", "--channel", channel)
        for line in lines_starting(sub, "received [", 2):
            values = line.strip()[len("received ["):-1].split()
            assert len(values) == 6
            assert all(-90.0 <= float(v) <= 90.0 for v in values)
    finally:
        results = [interrupt(proc) for proc in (sub, pub) if proc is not None]
    for code, _out, err in results:
        assert code == 0, err
    assert not (SHM / pub_segment_name(channel)).exists()


def test_reqrep_example_server_and_client(channel: str) -> None:
    server = start("reqrep_example.py", "server", "--channel", channel)
    try:
        wait_for_line(server, "calculator serving")
        client = subprocess.run([sys.executable, str(EXAMPLES / "reqrep_example.py"), "client",
                                 "--channel", channel], capture_output=True, text=True,
                                timeout=60, cwd=str(ROOT))
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == ["add(2, 3) = 5", "mul(6, 7) = 42",
                                              "add(0.5, 0.25) = 0.75"]
    finally:
        code, out, err = interrupt(server)
    assert code == 0, err
    assert "served 3 requests" in out
    assert not (SHM / rep_segment_name(channel)).exists()


def test_command_executor_and_sender(channel: str) -> None:
    executor = start("command_executor.py", "--channel", channel)
    try:
        wait_for_line(executor, "executor ready")
        sender = subprocess.run(
            [sys.executable, str(EXAMPLES / "command_sender.py"), "--channel", channel],
            input="move arm\n\nopen gripper\nESTOP\n", capture_output=True, text=True,
            timeout=60, cwd=str(ROOT))
        assert sender.returncode == 0, sender.stderr
        assert sender.stdout.splitlines()[1:] == [
            "'move arm': done", "'open gripper': done", "'ESTOP': ESTOP_ACK",
            "the executor has stopped"]
        executor.wait(15)  # ESTOP stops it
    finally:
        code, out, err = interrupt(executor)
    assert code == 0, err
    assert "executing 'open gripper'" in out
    assert not (SHM / rep_segment_name(channel)).exists()


# What 1.0's examples/benchmark.py --quick does, as a 1.0 user writes it: clean up a possible
# leftover with force_unlink(<segment name helper>), size the ring to hold every message, count
# send_bytes' True results, drain with recv_bytes, time a same-process ping, push and pull.
BENCHMARK_1_0 = r"""
import statistics, sys, time
from shm_comm import Publisher, Subscriber, Pusher, Puller, force_unlink
from shm_comm.utils import pub_segment_name, push_segment_name

ch = sys.argv[1]
for size in (64, 512, 4092):
    force_unlink(pub_segment_name(ch))
    with Publisher(ch, num_slots=1000 + 64, slot_size=4096) as pub:
        with Subscriber(ch) as sub:
            sent = sum(1 for _ in range(1000) if pub.send_bytes(b"x" * size))
            received = 0
            while received < sent:
                if sub.recv_bytes(timeout=2.0):
                    received += 1
    print(f"pubsub {size} sent={sent} received={received}")

force_unlink(pub_segment_name(ch))
latencies = []
with Publisher(ch, num_slots=512, slot_size=128) as pub:
    with Subscriber(ch) as sub:
        for _ in range(200):
            t0 = time.perf_counter_ns()
            pub.send_bytes(b"ping")
            assert sub.recv_bytes(timeout=1.0) == b"ping"
            latencies.append(time.perf_counter_ns() - t0)
print(f"latency n={len(latencies)} p50={statistics.median(latencies) / 1000:.2f}us")

force_unlink(push_segment_name(ch))
with Pusher(ch, num_slots=512, slot_size=256) as push:
    with Puller(ch) as pull:
        pushed = sum(1 for _ in range(500) if push.send_bytes(b"job"))
        pulled = 0
        while pulled < pushed:
            if pull.recv_bytes(timeout=2.0):
                pulled += 1
print(f"pipeline pushed={pushed} pulled={pulled}")
"""


def test_what_the_1_0_benchmark_does(channel: str) -> None:
    result = subprocess.run([sys.executable, "-c", BENCHMARK_1_0, channel], capture_output=True,
                            text=True, timeout=120, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"pubsub {size} sent=1000 received=1000" for size in (64, 512, 4092)]
    assert lines[3].startswith("latency n=200 p50=")
    assert lines[4] == "pipeline pushed=500 pulled=500"
    assert not (SHM / pub_segment_name(channel)).exists()
    assert not (SHM / push_segment_name(channel)).exists()


@pytest.mark.parametrize("script", ["simple_pubsub.py", "numpy_sharing.py", "reqrep_example.py",
                                    "command_executor.py", "command_sender.py", "demo.py"])
def test_examples_answer_help(script: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"],
                            capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert "received" not in result.stdout  # --help ran nothing


def test_demo_ends_with_what_was_sent_received_and_lost(channel: str) -> None:
    # On this session's channel, so that the leak check sees a segment the demo left behind.
    result = subprocess.run([sys.executable, str(EXAMPLES / "demo.py"), "--channel", channel],
                            capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == ("demo: the publisher sent 1000 messages; the subscriber, another "
                         "process, received 1000 and lost 0")
    assert "[publisher ] done: sent 1000; subscribers lost 0 of them" in lines
    assert not (SHM / pub_segment_name(channel)).exists()
