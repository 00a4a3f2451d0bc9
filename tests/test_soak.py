"""Soak: one publisher at 2 kHz, eight subscriber processes of every kind, for a long time.

CI runs SOAK_SECONDS (60 by default); the ``slow``-marked test runs 5 minutes. Per subscriber:
messages arrive in order and received + dropped equals what was sent while it was attached,
exactly; the fast subscribers lose nothing; the publisher's memory stays flat; no file
descriptors or segments leak.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, rest_of_output, stop, wait_for_line
from workers import SENTINEL

from shm_comm import ArrayPublisher, Publisher

WORKERS = str(ROOT / "tests" / "workers.py")
RATE = 2000.0
MODES = ["normal", "normal", "normal", "slow", "slow", "stalled", "holder"]


def _start(channel: str, mode: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, WORKERS, "soak-sub", channel, mode, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT))
    return proc


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def soak(channel: str, seconds: float) -> None:
    pub = Publisher(channel, num_slots=2048, slot_size=64, serialization="raw")
    arr_pub = ArrayPublisher(channel + "_arr", shape=(8,), dtype=np.uint64, num_slots=2048)
    stall = seconds * 0.5
    subs = {f"{mode}{i}": _start(channel, mode, stall) for i, mode in enumerate(MODES)}
    restarted = _start(channel, "normal", stall)
    restarts = 0
    try:
        for proc in [*subs.values(), restarted]:
            wait_for_line(proc, "ready", timeout=60)
        fds_before = len(os.listdir("/proc/self/fd"))
        sent = 0
        period = 1.0 / RATE
        start = time.monotonic()
        next_send = start
        next_restart = start + 3.0
        rss = []
        buf = np.zeros(8, dtype=np.uint64)
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_restart:
                stop(restarted)  # SIGKILL, as a crash would
                restarted = _start(channel, "normal", 0.0)
                wait_for_line(restarted, "ready", timeout=60)
                restarts += 1
                next_restart = time.monotonic() + 3.0
                rss.append(_rss_kib())
                pub.stats()  # reaps the killed subscriber's row
            pub.send_bytes(struct.pack("<Q", sent))
            buf[:] = sent
            arr_pub.send(buf)
            sent += 1
            next_send += period
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.5:
                next_send = time.monotonic()  # fell far behind: do not burst to catch up
        # Sentinels until every subscriber has seen one.
        reports: dict[str, dict[str, object]] = {}
        sentinels = 0
        deadline = time.monotonic() + seconds + 120
        pending = dict(subs)
        while pending and time.monotonic() < deadline:
            pub.send_bytes(struct.pack("<Q", SENTINEL + sentinels))
            buf[:] = SENTINEL + sentinels
            arr_pub.send(buf)
            sentinels += 1
            time.sleep(0.01)
            for name, proc in list(pending.items()):
                if proc.poll() is not None:
                    out = rest_of_output(proc)
                    err = proc.stderr.read() if proc.stderr else ""
                    assert proc.returncode == 0, f"{name} failed: {err}"
                    reports[name] = json.loads(out.strip().splitlines()[-1])
                    del pending[name]
        assert not pending, f"subscribers never finished: {sorted(pending)}"
        fds_after = len(os.listdir("/proc/self/fd"))
        stats = pub.stats()
        print(f"\nsoak {seconds:.0f} s: sent {sent} at {sent / seconds:.0f} Hz, "
              f"{restarts} subscriber kills/restarts, drop_count {stats['drop_count']}, "
              f"RSS {rss[0] if rss else 0} -> {rss[-1] if rss else 0} KiB")
        for name, rep in sorted(reports.items()):
            print(f"  {name:9s} {rep}")
        for name, rep in reports.items():
            assert rep["out_of_order"] == 0, name
            # Every message sent while attached was either received or counted as dropped.
            total = int(rep["received"]) + int(rep["dropped"])  # type: ignore[call-overload]
            assert total == sent + int(rep["sentinel"]), (name, rep)  # type: ignore[call-overload]
            if name.startswith(("normal", "holder")):
                assert rep["dropped"] == 0, f"fast subscriber {name} lost messages"
                assert rep["first"] == 0, f"{name} missed the first message"
            if name.startswith("holder"):
                assert rep["held_changed"] == 0, "a held zero-copy view changed"
        assert any(int(r["dropped"]) > 0 for n, r in reports.items()  # type: ignore[call-overload]
                   if n.startswith(("slow", "stalled"))), "slow subscribers should have lost some"
        assert restarts >= 1
        assert fds_after <= fds_before, "file descriptors leaked"
        if len(rss) >= 3:
            assert rss[-1] - rss[1] < 20_000, f"publisher memory grew: {rss}"
    finally:
        for proc in [*subs.values(), restarted]:
            stop(proc)
        pub.close()
        arr_pub.close()


def test_soak_ci(channel: str) -> None:
    soak(channel, float(os.environ.get("SOAK_SECONDS", "60")))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_five_minutes(channel: str) -> None:
    soak(channel, 300.0)
