"""The ``shm-comm`` command line, end to end: the real command against real publisher processes.

Each test starts its publishers as separate processes (they print ``ready`` once the channel
exists and stop cleanly when their stdin closes), runs ``python -m shm_comm ...`` (once the
installed ``shm-comm`` script) and checks what it prints and how it exits. No fixed sleeps:
every wait is on a printed line, a counter or a process exit, with a deadline.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ROOT, spawn_python, stop, wait_for_line

from shm_comm import channel_info, force_unlink
from shm_comm._backend import backend
from shm_comm.cli import main
from shm_comm.cli._format import format_age, format_bytes
from shm_comm.cli.echo import summarize_array
from shm_comm.cli.hz import RateWindow
from shm_comm.cli.pub import parse_value
from shm_comm.naming import segment_name

CLI = [sys.executable, "-m", "shm_comm"]
SHM = Path(backend.SHM_DIR or "/dev/shm")  # where segments live (SHM_COMM_DIR may move it)
COMMANDS = ["list", "info", "echo", "hz", "bw", "pub", "top", "clean"]

# A publisher process: argv name, kind (pickle, msgpack, raw, array, struct), rate in Hz,
# message size in bytes. Prints "ready" once the channel exists, publishes on an absolute
# schedule until its stdin closes or says "stop", then prints what it sent and exits cleanly:
# the count, and for message i the wall-clock times (time.time_ns, the clock that stamps
# messages) just before and just after its send, which bracket the stamp it carries. On a busy
# machine the real rate strays from the nominal one; rate tests compare the tools' figures
# with these brackets (stamp_span) rather than with the nominal rate.
PUBLISHER = r"""
import json, select, sys, time
import numpy as np
from shm_comm import ArrayPublisher, Publisher
name, kind, rate, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
if kind == "array":
    pub = ArrayPublisher(name, dtype=np.uint8, shape=(size,), num_slots=8, max_subscribers=4)
    frame = np.arange(size, dtype=np.uint64).astype(np.uint8)
    send = lambda i: pub.send(frame)
elif kind == "struct":
    dt = np.dtype([("x", "<f8"), ("y", "<f4", (3,)), ("ok", "?")])
    pub = ArrayPublisher(name, dtype=dt, shape=(4,))
    def send(i):
        a = np.zeros(4, dt); a["x"] = [i, i + 1, i + 2, i + 3]; a["y"] = 1.5; a["ok"] = True
        pub.send(a)
elif kind == "raw":
    pub = Publisher(name, serialization="raw")
    send = lambda i: pub.send_bytes(bytes(range(16)) * (size // 16))
else:
    pub = Publisher(name, serialization=kind, slot_size=max(4096, size + 256))
    send = lambda i: pub.send({"i": i, "text": "x" * size})
print("ready", flush=True)
start = time.monotonic()
i = 0
stamps = []
while not select.select([sys.stdin], [], [], 0)[0]:
    before = time.time_ns()
    send(i)
    stamps.append((before, time.time_ns()))
    i += 1
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
print(json.dumps({"sent": i, "stamps": stamps}), flush=True)
pub.close()
"""


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shm_comm args...`` to completion (``timeout``: a bound on a hang; a
    busy machine takes seconds to start Python)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT))


def start_cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``python -m shm_comm args...`` in the background, unbuffered text pipes."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    options.update(kwargs)
    return subprocess.Popen([*CLI, *args], text=True, env=env, cwd=str(ROOT), **options)


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 5.0
           ) -> tuple[int, str, str]:
    """Send ``sig`` to a running CLI process; its exit status, stdout and stderr."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"process did not exit after signal {sig}: {err}") from None
    return proc.returncode, out, err


@pytest.fixture
def publisher() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start publisher processes (see PUBLISHER); all are stopped cleanly at the end."""
    procs: list[tuple[subprocess.Popen[str], str]] = []

    def start(name: str, kind: str = "pickle", rate: float = 100.0, size: int = 16
              ) -> subprocess.Popen[str]:
        proc = spawn_python(PUBLISHER, name, kind, str(rate), str(size), stdin=subprocess.PIPE)
        procs.append((proc, name))
        wait_for_line(proc, "ready")
        return proc

    yield start
    for proc, name in procs:
        try:
            proc.communicate(input="stop\n", timeout=5)  # a clean exit removes the segment
        except (subprocess.TimeoutExpired, ValueError):
            stop(proc)
        force_unlink(name)  # no-op unless the publisher failed to clean up


def stop_publisher(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Tell a PUBLISHER process to stop; the JSON summary it prints."""
    assert proc.stdin is not None
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    summary: dict[str, Any] = json.loads(wait_for_line(proc, "{", timeout=5))
    return summary


def stamp_span(stamps: list[list[int]], first: int, last: int) -> tuple[float, float]:
    """Shortest and longest the time between the stamps of messages ``first`` and ``last``
    can be, in seconds, given the times a PUBLISHER logged around each send (its "stamps")."""
    return (stamps[last][0] - stamps[first][1]) / 1e9, (stamps[last][1] - stamps[first][0]) / 1e9


def assert_publishers_rate(rate: float, messages: int, span: tuple[float, float]) -> None:
    """``rate`` is ``messages`` over a stamped ``span`` (as stamp_span gives it): the rate the
    publisher really achieved, which a loaded machine moves away from the nominal one."""
    shortest, longest = span
    assert shortest > 0, span
    assert messages / longest * (1 - 1e-9) <= rate <= messages / shortest * (1 + 1e-9), (
        rate, messages, span)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse one JSON object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Conventions: help, entry point, errors, layering
# --------------------------------------------------------------------------------------------

def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: shm-comm {command}")
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_installed_entry_point_lists_a_live_channel(
        channel: str, publisher: Callable[..., subprocess.Popen[str]]) -> None:
    script = Path(sys.executable).with_name("shm-comm")
    if not script.exists():
        found = shutil.which("shm-comm")
        assert found is not None, "the shm-comm script is not installed (pip install -e .)"
        script = Path(found)
    proc = publisher(channel)
    result = subprocess.run([str(script), "list", "--json"], capture_output=True, text=True,
                            timeout=9)
    assert result.returncode == 0, result.stderr
    (entry,) = [e for e in json.loads(result.stdout) if e.get("name") == channel]
    assert entry["kind"] == "pubsub"
    assert entry["encoding"] == "pickle"
    assert entry["publisher_pid"] == proc.pid
    assert entry["publisher_alive"] is True
    assert entry["state"] == "live"
    assert (entry["num_slots"], entry["slot_size"]) == (64, 4096)


@pytest.mark.parametrize("command", ["echo", "hz", "bw", "info"])
def test_unknown_channel_is_one_line_on_stderr_and_exit_1(channel: str, command: str) -> None:
    started = time.monotonic()
    result = run_cli(command, channel, "--timeout", "0.3")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no channel {channel!r} (waited 0.3 s)" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 5


def test_invalid_channel_name_is_a_usage_error() -> None:
    result = run_cli("echo", "bad/name", "--timeout", "0")
    assert result.returncode == 2
    assert "invalid channel name" in result.stderr
    assert result.stderr.count("\n") == 1


def test_echo_waits_for_a_channel_that_appears_later(
        channel: str, publisher: Callable[..., subprocess.Popen[str]]) -> None:
    echo = start_cli("echo", channel, "-n", "1", "--json", "--timeout", "8")
    try:
        publisher(channel)
        out, err = echo.communicate(timeout=9)
    finally:
        stop(echo)
    assert echo.returncode == 0, err
    (message,) = json_lines(out)
    assert message["value"]["text"] == "x" * 16


def test_core_never_imports_the_cli() -> None:
    code = ("import sys, shm_comm, shm_comm.channels, shm_comm.pubsub, shm_comm.arrays\n"
            "assert 'shm_comm.cli' not in sys.modules, 'the core imported the CLI'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=9, cwd=str(ROOT))
    for path in (ROOT / "shm_comm").rglob("*.py"):
        if path.parent.name != "cli" and path.name != "__main__.py":
            assert not re.search(r"^\s*(from \.cli|from \. import cli|import shm_comm\.cli)",
                                 path.read_text(), re.MULTILINE), path


# --------------------------------------------------------------------------------------------
# list / info / clean
# --------------------------------------------------------------------------------------------

def _leave_stale_segment(name: str) -> None:
    """A publisher process that dies without cleaning up (as after kill -9)."""
    code = ("import os, sys\nfrom shm_comm import Publisher\n"
            "p = Publisher(sys.argv[1], num_slots=4, slot_size=256)\np.send(1)\n"
            "sys.stdout.flush()\nos._exit(0)")
    subprocess.run([sys.executable, "-c", code, name], check=True, timeout=9, cwd=str(ROOT))


@pytest.fixture
def live_stale_and_junk(channel: str, publisher: Callable[..., subprocess.Popen[str]]
                        ) -> Iterator[tuple[str, str, Path, int]]:
    """Three segments: a live channel, a stale one (publisher died) and a foreign file."""
    live, dead = f"{channel}_live", f"{channel}_dead"
    junk = SHM / f"shmcp_{channel}_junk"
    live_pid = publisher(live).pid
    try:
        _leave_stale_segment(dead)
        junk.write_bytes(b"not a shm_comm segment")
        yield live, dead, junk, live_pid
    finally:
        junk.unlink(missing_ok=True)
        force_unlink(dead)


def test_list_marks_stale_and_unreadable(channel: str,
                                         live_stale_and_junk: tuple[str, str, Path, int]
                                         ) -> None:
    live, dead, junk, live_pid = live_stale_and_junk
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] if not line.startswith("?") else line.split()[1]: line
            for line in result.stdout.splitlines() if line.strip()}
    assert f"{live_pid} alive" in rows[live]
    assert rows[live].rstrip().endswith("live")
    assert "64 x 4 KiB" in rows[live]
    assert " dead " in rows[dead]
    assert rows[dead].rstrip().endswith("stale")
    assert "4 x 256 B" in rows[dead]
    assert rows[junk.name].rstrip().endswith("unreadable")
    assert f"? {junk.name}: segment is" in result.stdout
    assert "`shm-comm clean` removes" in result.stdout

    listed = json.loads(run_cli("list", f"*{channel}_*", "--json").stdout)
    assert {e.get("name", e["segment"]): e["state"] for e in listed} == {
        live: "live", dead: "stale", junk.name: "unreadable"}


def test_clean_removes_only_stale_segments(channel: str,
                                           live_stale_and_junk: tuple[str, str, Path, int]
                                           ) -> None:
    live, dead, junk, _pid = live_stale_and_junk
    dry = run_cli("clean", f"*{channel}_*", "--dry-run")
    assert dry.returncode == 0
    assert f"would remove {segment_name('pubsub', dead)}" in dry.stdout
    assert live not in dry.stdout
    assert channel_info(dead) is not None

    cleaned = run_cli("clean", f"*{channel}_*")
    assert cleaned.returncode == 0
    assert f"removed {segment_name('pubsub', dead)}" in cleaned.stdout
    assert "left alone: 1 segment(s)" in cleaned.stdout
    assert channel_info(dead) is None
    assert channel_info(live) is not None  # a live publisher's segment is never removed
    assert junk.exists()
    assert "no stale segments" in run_cli("clean", f"*{channel}_*").stdout


def test_clean_removes_half_built_segments_that_fit_its_pattern(channel: str) -> None:
    """A publisher killed while building its segment leaves it under a temporary name; clean
    removes it when its creator is gone (no lock held, pid 4194302 absent), within the
    pattern only."""
    def half_built(name: str) -> Path:
        path = Path(backend.display_path(f".{segment_name('pubsub', name)}.4194302.0badc0de.tmp"))
        path.write_bytes(b"\0" * 4096)
        return path

    mine, other = half_built(f"{channel}_half"), half_built(f"{channel}x_half")
    try:
        assert not backend.pid_alive(4194302)
        cleaned = run_cli("clean", f"{channel}_*")
        assert cleaned.returncode == 0
        assert f"removed {mine.name} (left half-built by a process that died)" in cleaned.stdout
        assert not mine.exists()
        assert other.exists()  # outside the pattern
    finally:
        mine.unlink(missing_ok=True)
        other.unlink(missing_ok=True)


def test_list_and_info_show_the_shared_memory_each_channel_takes(channel: str) -> None:
    from shm_comm import ArrayPublisher

    with ArrayPublisher(channel, shape=(480, 640, 3), dtype=np.uint8, num_slots=4) as pub:
        taken = os.stat(SHM / segment_name("pubsub", channel)).st_blocks * 512
        layout = pub._segment.layout
        assert taken >= layout.total_size  # every page reserved at creation

        (entry,) = json.loads(run_cli("list", channel, "--json").stdout)
        assert entry["shm_bytes"] == taken
        total, free = backend.space() or (0, 0)
        assert entry["shm_total"] == total
        assert abs(entry["shm_free"] - free) < 256 * 2**20  # others use /dev/shm meanwhile
        assert 0 < entry["shm_free"] <= entry["shm_total"]

        text = run_cli("list", channel).stdout
        (row,) = [line for line in text.splitlines() if line.startswith(channel)]
        assert f" {format_bytes(taken)} " in row
        assert re.search(r"^/dev/shm: \S+ \S+ free of \S+ \S+; this channel takes "
                         + re.escape(format_bytes(taken)) + "$", text, re.MULTILINE), text

        info = run_cli("info", channel).stdout
        (memory,) = [line for line in info.splitlines() if line.startswith("memory")]
        assert f"{format_bytes(taken)} of shared memory ({layout.num_buffers} buffers of " \
               f"{format_bytes(layout.buffer_stride)}" in memory
        assert " free of " in memory
        assert json.loads(run_cli("info", channel, "--json").stdout)["shm_bytes"] == taken


SUBSCRIBER = r"""
import json, sys
from shm_comm import ArraySubscriber
sub = ArraySubscriber(sys.argv[1], timeout_connect=8)
print("ready", flush=True)
got = 0
while sub.publisher_alive or sub.stats()["pending"]:
    if sub.recv(timeout=0.1) is not None:
        got += 1
print(json.dumps({"received": got}), flush=True)
"""


def test_info_shows_layout_array_spec_and_each_subscriber(
        channel: str, publisher: Callable[..., subprocess.Popen[str]]) -> None:
    pub = publisher(channel, "struct", 200)
    sub = spawn_python(SUBSCRIBER, channel)
    try:
        wait_for_line(sub, "ready")
        wait_until(lambda: (channel_info(channel) or {}).get("subscribers") == 1)
        result = run_cli("info", channel)
        assert result.returncode == 0, result.stderr
        fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                      for line in result.stdout.splitlines() if re.match(r"^[a-z]", line))
        assert fields["channel"] == channel
        assert fields["kind"] == "pubsub"
        assert fields["encoding"] == "array"
        assert fields["publisher"] == f"pid {pub.pid} (alive)"
        assert fields["array"].startswith("[('x', '<f8'), ('y', '<f4', (3,)), ('ok', '?')] "
                                          "(4,) fixed shape")
        assert fields["subscribers"] == "1 of 32"
        assert re.search(rf"^\s+{sub.pid}\s+yes\s+\d+\s+0\s+\d+", result.stdout, re.MULTILINE)

        info = json.loads(run_cli("info", channel, "--json").stdout)
        assert info["metadata"]["type"] == "ndarray"
        (record,) = info["subscriber_records"]
        assert record["pid"] == sub.pid
        assert record["alive"] is True
        assert record["dropped"] == 0
    finally:
        stop_publisher(pub)
        wait_for_line(sub, "{")
        stop(sub)


# --------------------------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "expected"), [
    ("pickle", r"^\{'i': \d+, 'text': 'xxxxxxxxxxxxxxxx'\}$"),
    ("msgpack", r"^\{'i': \d+, 'text': 'xxxxxxxxxxxxxxxx'\}$"),
    ("array", r"^uint8 \(100000,\)  min 0  max 255  mean 127\.\d+$"),
    ("struct", r"^struct \(4,\)  fields: x, y, ok$"),
    ("raw", r"^00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 00 01 .* \(\+16 bytes\)$"),
])
def test_echo_decodes_each_encoding(channel: str, kind: str, expected: str,
                                    publisher: Callable[..., subprocess.Popen[str]]) -> None:
    size = 100000 if kind == "array" else 80 if kind == "raw" else 16
    publisher(channel, kind, 200, size)
    result = run_cli("echo", channel, "-n", "2")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("---\n")
    assert len(blocks) == 3
    assert blocks[2] == ""
    for block in blocks[:2]:
        header, *body = block.splitlines()
        encoding = "array" if kind == "struct" else kind
        assert re.match(rf"^#\d+  stamp \d+\.\d{{6}}  age [\d.]+ [mµ]?s  {encoding}  ", header)
        assert re.match(expected, body[0]), body
    if kind == "struct":
        assert re.search(r"^  x: float64 \(4,\)  \[\d+\.0, ", result.stdout, re.MULTILINE)
        assert "  y: float32 (4, 3)  min 1.5  max 1.5  mean 1.5" in result.stdout
        assert re.search(r"^  ok: bool \(4,\)  \[true, true, true, true\]$", result.stdout,
                         re.MULTILINE)


def test_echo_json_raw_and_latest(channel: str,
                                  publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 200)
    result = run_cli("echo", channel, "-n", "3", "--json")
    assert result.returncode == 0, result.stderr
    messages = json_lines(result.stdout)
    assert len(messages) == 3
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    for m in messages:
        assert m["channel"] == channel
        assert m["encoding"] == "pickle"
        assert m["value"] == {"i": m["seq"], "text": "x" * 16}
        assert 0 <= m["age"] < 5

    raw = json_lines(run_cli("echo", channel, "-n", "1", "--json", "--raw").stdout)[0]
    assert raw["value"]["hex"].startswith("80")  # a pickle stream, not decoded
    assert raw["value"]["bytes"] == raw["size"]

    latest = json_lines(run_cli("echo", channel, "-n", "1", "--json", "--latest").stdout)[0]
    assert latest["age"] < 1.0


def test_echo_stops_on_a_closed_pipe(channel: str,
                                     publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 500)
    echo = start_cli("echo", channel)
    assert echo.stdout is not None
    echo.stdout.readline()
    echo.stdout.close()  # like `shm-comm echo x | head -1`
    echo.wait(timeout=5)
    assert echo.stderr is not None
    err = echo.stderr.read()
    echo.stderr.close()
    assert echo.returncode == 141, err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------
# hz / bw
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "rate", "size"), [
    ("pickle", 500.0, 16),  # many small messages
    ("array", 30.0, 4 << 20),  # camera-like: 4 MiB frames
])
def test_hz_reports_the_published_rate(channel: str, kind: str, rate: float, size: int,
                                       publisher: Callable[..., subprocess.Popen[str]]) -> None:
    pub = publisher(channel, kind, rate, size)
    result = run_cli("hz", channel, "-n", "2", "-i", "1.5", "--json")
    stamps = stop_publisher(pub)["stamps"]
    assert result.returncode == 0, result.stderr
    reports = json_lines(result.stdout)
    assert len(reports) == 2
    last = reports[-1]
    first_seq, last_seq = last["first_seq"], last["last_seq"]
    # Every message between the first and the last one hz saw was seen or counted as skipped.
    assert last["window"] + last["skipped"] == last_seq - first_seq + 1
    assert last_seq - first_seq >= rate  # 3 s of reports: at least a second's worth
    # The rate is the publisher's own, from its stamps of those two messages: exactly what it
    # achieved in between (on a busy machine, not quite the nominal rate; bounded generously).
    assert_publishers_rate(last["rate"], last_seq - first_seq,
                           stamp_span(stamps, first_seq, last_seq))
    assert last["rate"] == pytest.approx(rate, rel=0.3)
    # Periods come from consecutive messages seen, so they lie within the logged brackets;
    # when hz saw every message, their mean is the rate's period.
    periods = [stamp_span(stamps, k, k + 1) for k in range(first_seq, last_seq)]
    assert min(p[0] for p in periods) - 1e-9 <= last["min"] <= last["max"]
    assert last["max"] <= max(p[1] for p in periods) + 1e-9
    if last["skipped"] == 0:
        assert last["min"] <= 1 / last["rate"] <= last["max"]
    assert last["std"] >= 0


def test_hz_text_output_like_ros2(channel: str,
                                  publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 100)
    result = run_cli("hz", channel, "-n", "1")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    rate = float(first.removeprefix("average rate: "))
    # The figure itself is checked against the publisher's stamps above; here the format,
    # and a generous bound (a busy machine moves the real rate).
    assert rate == pytest.approx(100, rel=0.3)
    assert re.match(r"^\tmin: 0\.\d{6}s max: 0\.\d{6}s std dev: 0\.\d{6}s window: \d+$", second)


def test_bw_from_byte_counters(channel: str,
                               publisher: Callable[..., subprocess.Popen[str]]) -> None:
    size = 64 << 10
    pub = publisher(channel, "array", 100, size)
    wait_until(lambda: (channel_info(channel) or {}).get("msg_count", 0) >= 1)
    before = (channel_info(channel) or {})["msg_count"]
    result = run_cli("bw", channel, "-n", "2", "-i", "0.75", "--json")
    after = (channel_info(channel) or {})["msg_count"]
    text = run_cli("bw", channel, "-n", "1", "-i", "0.5").stdout
    stamps = stop_publisher(pub)["stamps"]
    assert result.returncode == 0, result.stderr
    report = json_lines(result.stdout)[-1]
    message = size + 64  # payload plus the typed-array header (one 64-byte block)
    assert report["mean_size"] == message
    assert report["bytes_per_s"] == pytest.approx(report["messages_per_s"] * message,
                                                  rel=1e-12)
    # The counters moved by ``messages`` between two snapshots taken while bw ran, and bw
    # divides by the stamps of the newest message in each: the rate is ``messages`` over the
    # stamped span of some run of that many messages sent meanwhile. (Snapshot n holds
    # messages up to seq n - 1.)
    messages = report["messages"]
    assert messages >= 1
    spans = [stamp_span(stamps, first, first + messages)
             for first in range(before - 1, after - messages)]
    assert any(messages / longest * (1 - 1e-9) <= report["messages_per_s"]
               <= messages / shortest * (1 + 1e-9) for shortest, longest in spans), (
        report, before, after)
    assert report["messages_per_s"] == pytest.approx(100, rel=0.3)  # generous: a busy machine
    match = re.match(r"^(\d+(?:\.\d+)?) MiB/s from \d+ messages \((\d+(?:\.\d+)?) msg/s\)\n"
                     r"\tmessage size mean: 64\.1 KiB window: ", text)
    assert match, text
    mib_per_s, per_s = float(match.group(1)), float(match.group(2))
    assert mib_per_s == pytest.approx(per_s * message / 2**20, rel=0.01)  # 3 digits shown


# --------------------------------------------------------------------------------------------
# Watching never perturbs
# --------------------------------------------------------------------------------------------

EXACT_PUBLISHER = r"""
import json, select, sys, time
from shm_comm import Publisher
pub = Publisher(sys.argv[1], num_slots=16)
print("ready", flush=True)
while pub.stats()["subscribers"] < 1:
    time.sleep(0.001)
sent = failed = 0
seen = set()
start = time.monotonic()
while not select.select([sys.stdin], [], [], 0)[0]:
    # Blocking sends: an observer counted as a subscriber would make these wait or fail.
    if pub.send(sent, block=True, timeout=2.0):
        sent += 1
    else:
        failed += 1
    if sent % 50 == 0:
        seen.add(pub.stats()["subscribers"])
    time.sleep(max(0.0, start + sent / 2000 - time.monotonic()))
stats = pub.stats()
print(json.dumps({"sent": sent, "failed": failed, "subscribers_seen": sorted(seen),
                  "drop_count": stats["drop_count"], "msg_count": stats["msg_count"]}),
      flush=True)
sys.stdin.readline()
pub.close()
"""

EXACT_SUBSCRIBER = r"""
import json, sys
from shm_comm import Subscriber
sub = Subscriber(sys.argv[1], timeout_connect=8)
print("ready", flush=True)
received, expected = 0, 0
while True:
    value = sub.recv(timeout=0.2)
    if value is not None:
        assert value == expected, (value, expected)
        received += 1
        expected += 1
    elif not sub.publisher_alive:
        break
print(json.dumps({"received": received, "dropped": sub.stats()["dropped"]}), flush=True)
"""


def test_echo_and_hz_do_not_perturb_a_production_channel(channel: str) -> None:
    pub = spawn_python(EXACT_PUBLISHER, channel, stdin=subprocess.PIPE)
    sub = spawn_python(EXACT_SUBSCRIBER, channel)
    echo = hz = None
    try:
        wait_for_line(pub, "ready")
        wait_for_line(sub, "ready")
        echo = start_cli("echo", channel)
        hz = start_cli("hz", channel, "-i", "0.5", "--json")
        assert echo.stdout is not None
        assert hz.stdout is not None
        # Both watchers see the stream...
        assert echo.stdout.readline().startswith("#")
        while True:
            report = json.loads(hz.stdout.readline())
            if report["rate"] is not None:
                break
        assert report["rate"] > 0
        # ...and echo now stalls (nobody reads its pipe) while the publisher carries on.
        info = channel_info(channel)
        assert info is not None
        assert info["subscribers"] == 1
        sent_before = info["msg_count"]
        wait_until(lambda: (channel_info(channel) or {})["msg_count"] > sent_before + 3000,
                   timeout=6)
        assert pub.stdin is not None
        pub.stdin.write("stop\n")
        pub.stdin.flush()
        result = json.loads(wait_for_line(pub, "{", timeout=5))
        assert result["failed"] == 0
        assert result["subscribers_seen"] == [1]
        assert result["drop_count"] == 0
        assert result["msg_count"] == result["sent"]
        pub.stdin.write("exit\n")
        pub.stdin.flush()
        counted = json.loads(wait_for_line(sub, "{", timeout=5))
        # Exact accounting, as if nobody had watched.
        assert counted["received"] + result["drop_count"] == result["sent"]
        assert counted["dropped"] == 0
    finally:
        for proc in (echo, hz):
            if proc is not None:
                code, _out, err = finish(proc)
                assert code == 130, err
                assert "Traceback" not in err
        stop(pub)
        stop(sub)
        force_unlink(channel)


# --------------------------------------------------------------------------------------------
# pub
# --------------------------------------------------------------------------------------------

PRINTING_SUBSCRIBER = r"""
import sys
from shm_comm import Subscriber
sub = Subscriber(sys.argv[1], serialization=sys.argv[2], timeout_connect=8)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    print(repr(sub.recv(timeout=8)), flush=True)
"""


@pytest.mark.parametrize(("value", "serialization", "expected"), [
    ("{'cmd': 'stop', 'speed': 0.5, 'axes': (1, 2)}", "pickle",
     "{'cmd': 'stop', 'speed': 0.5, 'axes': (1, 2)}"),
    ("hello world", "pickle", "'hello world'"),  # not a literal: sent as a string
    ("[1, 2.5, 'x']", "msgpack", "[1, 2.5, 'x']"),
    ("b'\\x00\\xff'", "raw", "b'\\x00\\xff'"),
])
def test_pub_sends_literals_to_a_subscriber(channel: str, value: str, serialization: str,
                                            expected: str) -> None:
    sub = spawn_python(PRINTING_SUBSCRIBER, channel, serialization, "3")
    try:
        result = run_cli("pub", channel, value, "-n", "3", "-r", "100",
                         "--serialization", serialization, "--wait-subscribers", "1")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"publisher ready: {channel!r} ({serialization}, ")
        assert lines[-1].startswith("publishing #3: ")
        out, err = sub.communicate(timeout=9)
        assert out.splitlines() == ["ready", expected, expected, expected], err
    finally:
        stop(sub)
    assert channel_info(channel) is None  # pub removed its channel on exit


def test_pub_refuses_a_channel_with_a_live_publisher(
        channel: str, publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel)
    result = run_cli("pub", channel, "1", "-1")
    assert result.returncode == 1
    assert "already has a live publisher" in result.stderr
    assert result.stderr.count("\n") == 1


# --------------------------------------------------------------------------------------------
# top
# --------------------------------------------------------------------------------------------

def _top_rate(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    match = re.search(r"\s([\d.]+) Hz\s", line)
    assert match, line
    return float(match.group(1))


def test_top_once_for_scripts(channel: str,
                              publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 200)
    publisher(f"{channel}_2", "msgpack", 50)
    result = run_cli("top", f"{channel}*", "--once", "-d", "0.5", "--sort", "rate")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout  # no ANSI codes when stdout is not a terminal
    assert result.stdout.startswith("shm-comm top  ")
    assert " 2 channels " in result.stdout.splitlines()[0]
    rows = [line.split()[0] for line in result.stdout.splitlines()[3:] if line.strip()]
    assert rows == [channel, f"{channel}_2"]  # sorted by rate, fastest first
    # counter_rate's figures are checked against the publisher's stamps (test_bw_...); here
    # the table, and generous bounds (over 0.5 s a busy machine moves the real rate).
    assert _top_rate(result.stdout, f"{channel}_2") == pytest.approx(50, rel=0.3)
    assert re.search(r"^CHANNEL\s+KIND\s+PID\s+RATE\s+BANDWIDTH\s+MSGS\s+DROPS\s+SUBS\s+LAST",
                     result.stdout, re.MULTILINE)
    assert _top_rate(result.stdout, channel) == pytest.approx(200, rel=0.3)


def _read_pty(master: int, proc: subprocess.Popen[str], until: Callable[[bytes], bool],
              timeout: float = 8.0) -> bytes:
    """Read the terminal side until ``until(output)`` or the process exits."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(data):
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


def test_top_refreshes_in_place_on_a_terminal(
        channel: str, publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 100)
    # -n: frames drawn over each other (cursor home, clear below), the last one stays.
    master, slave = pty.openpty()
    try:
        proc = start_cli("top", "-n", "2", "-d", "0.3", stdout=slave, stderr=slave,
                         stdin=subprocess.DEVNULL)
        output = _read_pty(master, proc, lambda d: d.count(b"\x1b[J") >= 2)
        assert proc.wait(timeout=5) == 0
    finally:
        os.close(slave)
        os.close(master)
    assert output.count(b"\x1b[H") == 2
    assert b"\x1b[?1049h" not in output
    assert channel.encode() in output

    # Interactive: the alternate screen like htop; q quits and restores the terminal.
    master, slave = pty.openpty()
    try:
        proc = start_cli("top", "-d", "0.2", stdout=slave, stderr=slave, stdin=slave)
        output = _read_pty(master, proc, lambda d: channel.encode() in d)
        assert output.startswith(b"\x1b[?1049h")
        os.write(master, b"q")
        output += _read_pty(master, proc, lambda d: b"\x1b[?1049l" in d)
        assert proc.wait(timeout=5) == 0
    finally:
        os.close(slave)
        os.close(master)
    assert output.rstrip().endswith(b"\x1b[?25h\x1b[?1049l")


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "first_line"), [
    (["echo", "{channel}"], "#"),
    (["hz", "{channel}"], "average rate"),
    (["bw", "{channel}", "-i", "0.3"], ""),
    (["top", "-d", "0.3", "--plain"], "shm-comm top"),
])
def test_ctrl_c_exits_watchers_cleanly(channel: str, args: list[str], first_line: str,
                                       publisher: Callable[..., subprocess.Popen[str]]) -> None:
    publisher(channel, "pickle", 200)
    proc = start_cli(*(arg.format(channel=channel) for arg in args))
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(first_line)
    code, _out, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err


def test_ctrl_c_while_waiting_for_a_channel(channel: str) -> None:
    waiting = start_cli("echo", channel, "--timeout", "30")
    assert waiting.stderr is not None
    assert waiting.stderr.readline().startswith("shm-comm: waiting up to 30 s for channel")
    code, _out, err = finish(waiting)
    assert code == 130
    assert err == ""


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_pub_removes_its_channel_on_ctrl_c_and_sigterm(channel: str, sig: int,
                                                       status: int) -> None:
    pub = start_cli("pub", channel, "1", "-r", "100", "-q")
    assert pub.stdout is not None
    assert pub.stdout.readline().startswith("publisher ready")
    assert channel_info(channel) is not None
    code, _out, err = finish(pub, sig)
    assert code == status
    assert "Traceback" not in err
    assert channel_info(channel) is None


# --------------------------------------------------------------------------------------------
# Helpers, in process
# --------------------------------------------------------------------------------------------

def test_rate_window_counts_skipped_messages_and_resets_on_restart() -> None:
    window = RateWindow(100)
    assert window.report() is None
    for seq in [0, 1, 2, 5, 6]:  # 3 and 4 were skipped by the watcher, not by the channel
        window.add(seq, seq * 10_000_000)  # 100 Hz
    report = window.report()
    assert report is not None
    assert report["rate"] == pytest.approx(100)
    assert report["min"] == report["max"] == pytest.approx(0.01)
    assert report["skipped"] == 2
    window.add(0, 10**9)  # the publisher restarted: its sequence begins again
    window.add(1, 10**9 + 20_000_000)
    report = window.report()
    assert report is not None
    assert report["rate"] == pytest.approx(50)
    assert report["window"] == 2


def test_value_parsing_and_formatting() -> None:
    assert parse_value("{'a': [1, 2.5]}") == {"a": [1, 2.5]}
    assert parse_value("b'\\x01'") == b"\x01"
    assert parse_value("hello") == "hello"
    assert parse_value("os.system('x')") == "os.system('x')"  # never evaluated
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(6 << 20) == "6 MiB"
    assert format_age(None) == "-"
    assert format_age(0.0004) == "0.4 ms"
    assert format_age(3600) == "60 min"


def test_array_summaries_never_warn() -> None:
    nan = np.array([np.nan, 1.0, 3.0] * 10)
    assert summarize_array(nan) == {"dtype": "float64", "shape": [30], "min": 1.0, "max": 3.0,
                                    "mean": 2.0, "nan": 10}
    all_nan = summarize_array(np.full(20, np.nan, np.float32))
    assert all_nan["nan"] == 20
    assert "mean" not in all_nan
    assert summarize_array(np.zeros((0, 3)))["values"] == []
    assert summarize_array(np.ones(100, bool))["true"] == 100
    assert summarize_array(np.array(["a"] * 20))["head"] == ["a"] * 4
    inf = summarize_array(np.array([np.inf, 0.0] * 10))
    assert inf["max"] == "inf"
    json.dumps(inf, allow_nan=False)
