"""Faults with real processes: publishers killed mid-stream, subscribers killed holding views,
a full /dev/shm, stale segments. Nothing torn, nothing hangs, nothing leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, spawn_python, stop, wait_for_line
from workers import verify_payload

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    Subscriber,
    list_channels,
    remove_stale,
)
from shm_comm.utils import poll_until, pub_segment_name

WORKERS = str(ROOT / "tests" / "workers.py")
KILLS = int(os.environ.get("SHM_COMM_FAULT_KILLS", "100"))


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, WORKERS, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT))


def test_publisher_killed_at_random_points(channel: str) -> None:
    """A publisher SIGKILLed at random moments, KILLS times over: the subscriber never sees a
    torn message, no call hangs, it notices the publisher is gone, and resumes each time a new
    publisher takes over the name."""
    killer = start_worker("kill-loop", channel, str(KILLS), "1234")
    sub: Subscriber | None = None
    observer: Subscriber | None = None
    try:
        deadline = time.monotonic() + 120
        while sub is None:
            try:
                sub = Subscriber(channel, serialization="raw", timeout_connect=5)
            except Exception:  # the publisher may die while we attach; try again
                assert time.monotonic() < deadline
        observer = Subscriber(channel, serialization="raw", observer=True, timeout_connect=5)
        messages = incarnations = dead_seen = 0
        seen_incarnations: set[int] = set()
        longest_call = 0.0
        final = False
        while not final:
            assert time.monotonic() < deadline, (
                f"no FINAL message within the deadline: {sub.stats()}, segment "
                f"{sub._segment.name} closed={sub._segment.closed} "
                f"alive={sub._segment.owner_alive()} replaced={sub._segment.replaced()}")
            t0 = time.monotonic()
            data = sub.recv_bytes(timeout=0.05)
            observed = observer.recv_bytes(timeout=0)
            longest_call = max(longest_call, time.monotonic() - t0)
            for payload in (data, observed):
                if payload is None:
                    continue
                if payload.startswith(b"FINAL"):
                    final = final or payload is data
                    payload = payload[5:]
                incarnation, _seq = verify_payload(payload)
                seen_incarnations.add(incarnation)
                messages += 1
            if data is None and not sub.stats()["publisher_alive"]:
                dead_seen += 1
        stats = sub.stats()
        incarnations = len(seen_incarnations)
        print(f"\n{KILLS} publishers killed; {messages} messages verified from {incarnations} "
              f"incarnations; {stats['reconnects']} reconnects; publisher seen dead "
              f"{dead_seen} times; longest recv {longest_call * 1000:.0f} ms")
        assert killer.stdin is not None
        killer.stdin.write("stop\n")
        killer.stdin.flush()
        wait_for_line(killer, "stopped", timeout=20)
        assert killer.wait(20) == 0
        assert stats["reconnects"] >= 1
        assert dead_seen >= 1
        assert incarnations >= 2
        assert longest_call < 2.0, "a receive with a 50 ms timeout took far too long"
    finally:
        if killer.poll() is None and killer.stdin is not None:
            killer.stdin.write("stop\n")  # let the final publisher close its channel
            killer.stdin.flush()
            try:
                killer.wait(10)
            except subprocess.TimeoutExpired:
                pass
        stop(killer)
        for s in (sub, observer):
            if s is not None:
                s.close()


def test_subscribers_killed_while_holding_views(channel: str) -> None:
    """Killed zero-copy holders cost the publisher nothing; their buffers come back."""
    with ArrayPublisher(channel, shape=(64,), dtype=np.float64, num_slots=8,
                        max_subscribers=8) as pub:
        survivor = ArraySubscriber(channel)
        holders = [start_worker("hold", channel) for _ in range(4)]
        try:
            poll_until(lambda: pub.stats()["subscribers"] == 5, timeout=30, interval=0.005)
            assert pub.stats()["subscribers"] == 5
            pub.send(np.full(64, -1.0))
            for proc in holders:
                wait_for_line(proc, "holding", timeout=30)
            assert survivor.recv(timeout=5) is not None
            for proc in holders:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            sent_after = 0
            for i in range(1000):
                assert pub.send(np.full(64, float(i)))
                sent_after += 1
                view = survivor.recv(timeout=5)
                assert view is not None
                assert view[0] == float(i)
            stats = pub.stats()  # reaps the dead holders
            assert stats["subscribers"] == 1
            for i in range(pub.num_slots + 1):
                pub.send(np.full(64, float(i)))
                assert survivor.recv(timeout=5) is not None
            writer = pub._writer
            assert len(writer.held_buffers) <= 1, "buffers of dead holders were not reclaimed"
            assert writer.free_buffers >= writer._layout.num_buffers - pub.num_slots - 2
            sub_stats = survivor.stats()
            assert sub_stats["dropped"] == 0
            assert sub_stats["received"] == 1 + sent_after + pub.num_slots + 1
        finally:
            for proc in holders:
                stop(proc)
            survivor.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_shm_fails_at_creation_not_with_sigbus(tmp_path: Path) -> None:
    """A full tmpfs makes channel creation fail with a clear error; no SIGBUS ever."""
    mount = Path(tempfile.mkdtemp(prefix="shm_full_", dir=tmp_path))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        code = r"""
from shm_comm import Publisher, SHMConnectionError
try:
    Publisher("too_big", num_slots=64, slot_size=32768)   # ~2.1 MB > 1 MB
except SHMConnectionError as exc:
    print("refused:", exc)
first = Publisher("fits", num_slots=64, slot_size=8192)      # ~0.55 MB
try:
    Publisher("second", num_slots=64, slot_size=8192)        # no room left
except SHMConnectionError as exc:
    print("refused second:", exc)
for i in range(1000):
    first.send_bytes(bytes(8000))                             # every page is really there
print("sent", first.stats()["msg_count"])
first.close()
"""
        env = dict(os.environ, SHM_COMM_DIR=str(mount))
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("refused: cannot reserve"), lines
        assert "/dev/shm" in lines[0]
        assert lines[1].startswith("refused second: cannot reserve"), lines
        assert lines[2] == "sent 1000"
        assert os.listdir(mount) == [], "a failed creation left files behind"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_stale_segments_are_removed_but_never_live_ones(channel: str) -> None:
    live = Publisher(channel + "_live")
    code = ("import os, sys; from shm_comm import Publisher; "
            "p = Publisher(sys.argv[1]); print('ready', flush=True); os.kill(os.getpid(), 9)")
    proc = spawn_python(code, channel)
    try:
        wait_for_line(proc, "ready")
        proc.wait(10)
        info = {i["segment"]: i for i in list_channels()}
        assert info[pub_segment_name(channel)]["stale"] is True
        assert info[pub_segment_name(channel + "_live")]["stale"] is False
        # Scoped to this test's channels: never other people's stale segments.
        assert pub_segment_name(channel) in remove_stale(dry_run=True, pattern=f"{channel}*")
        assert os.path.exists(f"/dev/shm/{pub_segment_name(channel)}")
        removed = remove_stale(pattern=f"{channel}*")
        assert pub_segment_name(channel) in removed
        assert pub_segment_name(channel + "_live") not in removed
        assert not os.path.exists(f"/dev/shm/{pub_segment_name(channel)}")
        assert os.path.exists(f"/dev/shm/{pub_segment_name(channel + '_live')}")
        live.send("still here")
    finally:
        stop(proc)
        live.close()


def test_next_publisher_reclaims_a_dead_ones_segment(channel: str) -> None:
    code = ("import os, sys; from shm_comm import Publisher; "
            "p = Publisher(sys.argv[1]); p.send('old'); print('ready', flush=True); "
            "os.kill(os.getpid(), 9)")
    proc = spawn_python(code, channel)
    wait_for_line(proc, "ready")
    stop(proc)
    with Publisher(channel) as pub, Subscriber(channel) as sub:
        assert pub.stats()["msg_count"] == 0
        pub.send("new")
        assert sub.recv(timeout=2) == "new"
