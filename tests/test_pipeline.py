"""Push/pull: exactly-once hand-over to competing pullers, backpressure, and pullers that die.

Pullers that compete run as real separate processes. "Killed mid-claim" is made
deterministic by replacing the puller's copy step with a SIGKILL of itself: it dies holding
the slot it claimed, before the commit.
"""

from __future__ import annotations

import json
import secrets
import signal
import struct
import threading
from pathlib import Path

import pytest
from helpers import rest_of_output, spawn_python, stop, wait_for_line
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from shm_comm import layout as L
from shm_comm.errors import SHMBufferFullError, SHMConnectionError, SHMPeerGoneError
from shm_comm.pipeline import Puller, Pusher

PULLER = """
import json, sys
from shm_comm.errors import SHMPeerGoneError
from shm_comm.pipeline import Puller
got = []
with Puller(sys.argv[1]) as puller:
    print("ready", flush=True)
    while True:
        try:
            item = puller.recv(timeout=5)
        except SHMPeerGoneError:
            break
        assert item is not None, "no item and no end of queue within 5 s"
        got.append(item)
print("got", json.dumps(got), flush=True)
"""

DIE_WHILE_TAKING = """
import os, signal, sys
from shm_comm.pipeline import Puller
def die(self, slot):
    os.kill(os.getpid(), signal.SIGKILL)
Puller._copy_item = die
puller = Puller(sys.argv[1])
print("ready", flush=True)
puller.recv(timeout=5)
"""

ATTACH_AND_HANG = """
import sys, time
from shm_comm.pipeline import Puller
puller = Puller(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""

PUSHER_DIES = """
import os, signal, sys
from shm_comm.pipeline import Pusher
pusher = Pusher(sys.argv[1])
for i in range(3):
    pusher.send(i)
print("pushed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _kill_puller_mid_claim(channel: str, pusher: Pusher, item: object) -> None:
    """Have a puller in another process claim ``item`` and die holding it."""
    proc = spawn_python(DIE_WHILE_TAKING, channel)
    try:
        wait_for_line(proc, "ready")
        pusher.send(item)
        proc.wait(timeout=8)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL


def test_push_pull_in_one_process(channel: str) -> None:
    with Pusher(channel) as pusher, Puller(channel) as puller:
        assert pusher.send({"task": 1}) is True
        assert pusher.send_bytes(b"raw") is True
        assert puller.recv(timeout=1) == {"task": 1}
        assert puller.recv_bytes(timeout=1) == b"raw"
        assert puller.recv(timeout=0) is None
        assert not puller.last_redelivered
        stats = pusher.stats()
        assert (stats["sent"], stats["taken"], stats["pending"], stats["pullers"]) == (2, 2, 0, 1)
        assert puller.stats()["received"] == 2


def test_queue_reserves_no_buffers_for_zero_copy_holders(channel: str) -> None:
    """Pullers copy every item out: the segment holds the queue's buffers and one more, not
    one spare per possible puller (16 x 4 KiB of /dev/shm that nothing used)."""
    from shm_comm.channels import channel_info

    with Pusher(channel, num_slots=32, max_pullers=16):
        info = channel_info(channel, "pipeline")
        assert info is not None
        assert (info["max_holders"], info["num_buffers"]) == (0, 32 + 1)
        assert info["size"] < L.SegmentLayout(L.KIND_PIPELINE, 32, 4096, 16).total_size


def test_msgpack_and_fifo_order_with_one_puller(channel: str) -> None:
    with Pusher(channel, num_slots=8, serialization="msgpack") as pusher, \
            Puller(channel, serialization="msgpack") as puller:
        received = []
        for i in range(50):  # several laps of the ring
            pusher.send([i, "x"])
            if i % 3 == 2:
                received += [puller.recv(timeout=1) for _ in range(3)]
        while (item := puller.recv(timeout=0)) is not None:
            received.append(item)
        assert received == [[i, "x"] for i in range(50)]


def test_full_queue_raises_and_queues_nothing(channel: str) -> None:
    with Pusher(channel, num_slots=2) as pusher, Puller(channel) as puller:
        pusher.send(1)
        pusher.send(2)
        with pytest.raises(SHMBufferFullError, match="full"):
            pusher.send(3, block=False)
        with pytest.raises(SHMBufferFullError, match=r"for 0\.02 s"):
            pusher.send(3, timeout=0.02)
        assert pusher.stats()["sent"] == 2
        assert pusher.stats()["full"] == 2
        assert puller.recv(timeout=0) == 1
        pusher.send(3, block=False)
        assert [puller.recv(timeout=0), puller.recv(timeout=0)] == [2, 3]


def test_oversize_item_raises_and_queues_nothing(channel: str) -> None:
    with Pusher(channel, slot_size=64) as pusher, Puller(channel) as puller:
        with pytest.raises(ValueError, match=r"65 bytes.*slot of 64 bytes"):
            pusher.send_bytes(b"z" * 65)
        assert pusher.stats()["sent"] == 0
        assert puller.recv(timeout=0) is None


def test_several_pullers_in_other_processes_get_each_item_exactly_once(channel: str) -> None:
    count = 1500
    with Pusher(channel, num_slots=16) as pusher:
        procs = [spawn_python(PULLER, channel) for _ in range(3)]
        try:
            for proc in procs:
                wait_for_line(proc, "ready")
            for i in range(count):
                pusher.send(i, timeout=5)
            assert pusher.join(timeout=5)
            stats = pusher.stats()
        finally:
            pusher.close()
            outputs = [rest_of_output(proc, timeout=8) for proc in procs]
            for proc in procs:
                stop(proc)
    got: list[int] = []
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0
        got += json.loads(out.split("got ", 1)[1])
    assert sorted(got) == list(range(count))  # every item once, none twice
    assert (stats["taken"], stats["redelivered"]) == (count, 0)


def test_puller_killed_mid_claim_item_is_redelivered_once(channel: str) -> None:
    with Pusher(channel, num_slots=4) as pusher:
        _kill_puller_mid_claim(channel, pusher, "A")
        assert pusher.stats()["taken"] == 0  # claimed, never committed
        pusher.send("B")
        pusher.send("C")
        with Puller(channel) as puller:
            got = []
            while (item := puller.recv(timeout=0)) is not None:
                got.append((item, puller.last_redelivered))
            assert sorted(got) == [("A", True), ("B", False), ("C", False)]
            assert puller.stats()["redelivered"] == 1
        stats = pusher.stats()
        assert (stats["taken"], stats["redelivered"], stats["pullers"]) == (3, 1, 0)
        assert pusher.join(timeout=0)


def test_pusher_blocked_by_a_dead_claim_gets_it_recovered(channel: str) -> None:
    with Pusher(channel, num_slots=2) as pusher, Puller(channel) as puller:
        assert puller.recv(timeout=0) is None  # its first recovery scan is now behind it
        _kill_puller_mid_claim(channel, pusher, "A")
        pusher.send("B")
        got: list[tuple[object, bool]] = []

        def pull() -> None:
            while len(got) < 3 and (item := puller.recv(timeout=5)) is not None:
                got.append((item, puller.last_redelivered))

        worker = threading.Thread(target=pull)
        worker.start()
        try:
            # The ring is full and its next slot is held by the dead puller: this send waits
            # until the live puller, asked by the pusher, takes the dead claim over.
            pusher.send("C", timeout=5)
        finally:
            worker.join(8)
        assert sorted(got, key=str) == [("A", True), ("B", False), ("C", False)]
        assert pusher.stats()["redelivered"] == 1


def test_interrupted_claim_is_recovered(channel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Pusher(channel) as pusher, Puller(channel) as puller:
        pusher.send("item")
        original = Puller._copy_item

        def interrupted(self: Puller, slot: int) -> tuple[int, int, int, bytes]:
            monkeypatch.setattr(Puller, "_copy_item", original)
            raise KeyboardInterrupt

        monkeypatch.setattr(Puller, "_copy_item", interrupted)
        with pytest.raises(KeyboardInterrupt):
            puller.recv(timeout=0)
        assert puller.recv(timeout=0) == "item"
        assert puller.last_redelivered
        assert pusher.stats()["taken"] == 1


def test_pullers_drain_then_see_the_pusher_gone(channel: str) -> None:
    pusher = Pusher(channel)
    path = Path("/dev/shm") / pusher.segment_name
    puller = Puller(channel)
    for i in range(3):
        pusher.send(i)
    pusher.close()
    pusher.close()
    assert not path.exists()
    assert [puller.recv(timeout=1) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SHMPeerGoneError):
        puller.recv(timeout=1)
    puller.close()
    puller.close()
    with pytest.raises(ValueError, match="closed"):
        puller.recv(timeout=0)
    with pytest.raises(ValueError, match="closed"):
        pusher.send(1)


def test_pusher_that_dies_leaves_items_to_drain(channel: str) -> None:
    proc = spawn_python(PUSHER_DIES, channel)
    try:
        wait_for_line(proc, "pushed")
        with Puller(channel) as puller:
            proc.wait(timeout=8)
            assert [puller.recv(timeout=1) for _ in range(3)] == [0, 1, 2]
            with pytest.raises(SHMPeerGoneError):
                puller.recv(timeout=2)
    finally:
        stop(proc)
        with Pusher(channel):  # reclaims the dead pusher's segment, then removes it
            pass


def test_dead_pullers_rows_are_reaped_for_new_ones(channel: str) -> None:
    with Pusher(channel, max_pullers=1) as pusher:
        proc = spawn_python(ATTACH_AND_HANG, channel)
        try:
            wait_for_line(proc, "ready")
            with pytest.raises(SHMConnectionError, match="max_pullers"):
                Puller(channel, timeout_connect=0)
        finally:
            stop(proc)
        with Puller(channel) as puller:
            pusher.send("x")
            assert puller.recv(timeout=1) == "x"


def test_join_times_out_without_pullers(channel: str) -> None:
    with Pusher(channel) as pusher:
        assert pusher.join(timeout=0)
        pusher.send(1)
        assert not pusher.join(timeout=0.02)


def test_connect_timeout_and_live_pusher_conflict(channel: str) -> None:
    with pytest.raises(SHMConnectionError, match="no pusher"):
        Puller(channel, timeout_connect=0.01)
    with Pusher(channel), pytest.raises(SHMConnectionError, match="already has a live"):
        Pusher(channel)


def test_layout_words_are_where_the_spec_says(channel: str) -> None:
    with Pusher(channel, num_slots=4) as pusher, Puller(channel) as puller:
        atom, lay = pusher._segment.atom, pusher._segment.layout
        pusher.send("a")
        assert atom.load(lay.entries_offset) == L.queue_entry(0, L.QUEUE_READY)
        assert atom.load(L.HEAD) == 1
        assert puller.recv(timeout=0) == "a"
        assert atom.load(lay.entries_offset) == L.queue_entry(1, L.QUEUE_FREE)
        assert (atom.load(L.QUEUE_TAIL), atom.load(L.PIPE_TAKEN)) == (1, 1)
        rec = lay.record(puller.row)
        assert atom.load(rec + L.REC_CURSOR) - atom.load(rec + L.REC_START) == 1
        assert atom.load(rec + L.REC_CLAIM) == 0


class PipelineModel(RuleBasedStateMachine):
    """Random pushes, pulls, interrupted claims and puller restarts, against a simple model.

    Item ``i`` is pushed at queue position ``i``, so the model knows the ring exactly: a push
    finds the queue full iff item ``i - num_slots`` has not been handed over yet; a pull finds
    nothing iff every item pushed has been handed over (abandoned claims are recovered at
    once); no item is ever handed over twice; every redelivery is flagged and counted.
    """

    SLOTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.name = f"t_{secrets.token_hex(5)}"
        self.pusher = Pusher(self.name, num_slots=self.SLOTS, slot_size=8,
                             serialization="raw", max_pullers=4)
        self.pullers = [Puller(self.name, serialization="raw") for _ in range(3)]
        self.pushed = 0
        self.taken: set[int] = set()
        self.interrupted = 0
        self.redelivered = 0

    def _take(self, puller: Puller, data: bytes | None) -> None:
        if data is None:
            assert len(self.taken) == self.pushed, "an item is waiting but recv found none"
            return
        (item,) = struct.unpack("<Q", data)
        assert item not in self.taken, f"item {item} handed over twice"
        assert item < self.pushed
        self.taken.add(item)
        if puller.last_redelivered:
            self.redelivered += 1
            assert self.redelivered <= self.interrupted

    @rule()
    def push(self) -> None:
        full = self.pushed >= self.SLOTS and self.pushed - self.SLOTS not in self.taken
        try:
            self.pusher.send_bytes(struct.pack("<Q", self.pushed), block=False)
        except SHMBufferFullError:
            assert full
            return
        assert not full
        self.pushed += 1

    @rule(index=st.integers(0, 2))
    def pull(self, index: int) -> None:
        puller = self.pullers[index]
        self._take(puller, puller.recv_bytes(timeout=0))

    @rule(index=st.integers(0, 2))
    def interrupted_pull(self, index: int) -> None:
        puller = self.pullers[index]

        def interrupt(slot: int) -> tuple[int, int, int, bytes]:
            raise KeyboardInterrupt

        puller._copy_item = interrupt  # type: ignore[method-assign]
        try:
            assert puller.recv_bytes(timeout=0) is None
            assert len(self.taken) == self.pushed
        except KeyboardInterrupt:
            self.interrupted += 1
        finally:
            del puller._copy_item

    @rule(index=st.integers(0, 2))
    def restart_puller(self, index: int) -> None:
        self.pullers[index].close()
        self.pullers[index] = Puller(self.name, serialization="raw")

    @invariant()
    def counters_match(self) -> None:
        stats = self.pusher.stats()
        assert stats["sent"] == self.pushed
        assert stats["taken"] == len(self.taken)
        assert stats["redelivered"] == self.redelivered

    def teardown(self) -> None:
        try:
            while (data := self.pullers[0].recv_bytes(timeout=0)) is not None:
                self._take(self.pullers[0], data)
            assert self.taken == set(range(self.pushed))
        finally:
            for puller in self.pullers:
                puller.close()
            self.pusher.close()


TestPipelineModel = PipelineModel.TestCase
TestPipelineModel.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


FORK_CHILD_EXITS = """
import os, sys
from shm_comm.pipeline import Puller, Pusher
from shm_comm.reqrep import Replier
pusher = Pusher(sys.argv[1])
replier = Replier(sys.argv[1])
puller = Puller(sys.argv[1])
pid = os.fork()
if pid == 0:
    assert pusher.closed and replier.closed and puller.closed
    sys.exit(0)  # runs the exit handlers: they must leave the parent's channels alone
os.waitpid(pid, 0)
pusher.send("still open")
assert puller.recv(timeout=1) == "still open"
assert os.path.exists("/dev/shm/" + replier.segment_name)
print("ok", flush=True)
"""


def test_forked_child_lets_go_of_inherited_channels(channel: str) -> None:
    proc = spawn_python(FORK_CHILD_EXITS, channel)
    out, err = proc.communicate(timeout=8)
    assert proc.returncode == 0, err
    assert out.strip() == "ok"


def test_send_bytes_takes_any_contiguous_buffer(channel: str) -> None:
    import numpy as np

    values = np.arange(6, dtype=np.float64)
    with Pusher(channel, slot_size=64) as pusher, Puller(channel) as puller:
        pusher.send_bytes(values)
        assert np.array_equal(np.frombuffer(puller.recv_bytes(timeout=1) or b""), values)
        with pytest.raises(ValueError, match=r"80 bytes.*slot of 64 bytes"):
            pusher.send_bytes(np.zeros(10))
