"""Request/reply: correlation, arrival order, timeouts, and requesters or repliers that die.

The guarantees that involve other processes are tested with real separate processes
(``spawn_python``); a requester "killed mid-request" is killed with SIGKILL, either after its
request was queued or while it holds a queue slot (its write is replaced by a self-kill).
"""

from __future__ import annotations

import os
import secrets
import signal
import struct
import threading
import time
from pathlib import Path

import pytest
from helpers import spawn_python, stop, wait_for_line
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from shm_comm import layout as L
from shm_comm import reqrep
from shm_comm.errors import (
    SHMBufferFullError,
    SHMConnectionError,
    SHMPeerGoneError,
    SHMTimeoutError,
)
from shm_comm.reqrep import Replier, Requester
from shm_comm.utils import poll_until

REQUESTER = """
import os, sys
from shm_comm.reqrep import Requester
name, count = sys.argv[1], int(sys.argv[2])
with Requester(name) as req:
    print("ready", flush=True)
    for i in range(count):
        # Every few requests, give one up at once: its late reply must be dropped.
        if i % 7 == 3:
            req.send(("give-up", os.getpid(), i))
        reply = req.request((os.getpid(), i), timeout=5)
        assert reply == ("ok", os.getpid(), i), (reply, os.getpid(), i)
    print("done", req.stats()["received"], flush=True)
"""

REQUEST_THEN_HANG = """
import sys, time
from shm_comm.reqrep import Requester
req = Requester(sys.argv[1])
req.send("doomed")
print("sent", flush=True)
time.sleep(60)
"""

DIE_WHILE_WRITING = """
import os, signal, sys
from shm_comm.reqrep import Requester
def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)
Requester._write_request = die
req = Requester(sys.argv[1])
req.send("never published")
"""

REPLIER_DIES_AFTER_ONE = """
import os, signal, sys
from shm_comm.reqrep import Replier
rep = Replier(sys.argv[1])
print("ready", flush=True)
print("got", rep.recv(timeout=5), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

ATTACH_AND_HANG = """
import sys, time
from shm_comm.reqrep import Requester
req = Requester(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def _serve(rep: Replier, stop: threading.Event) -> None:
    while not stop.is_set():
        request = rep.recv(timeout=0.05)
        if request is not None:
            rep.send(("ok", *request))


def test_request_reply_in_one_process(channel: str) -> None:
    with Replier(channel) as rep, Requester(channel) as req:
        req.send({"x": 1})
        assert rep.recv(timeout=1) == {"x": 1}
        assert rep.send({"y": 2}) is True
        assert req.recv(timeout=1) == {"y": 2}
        req.send_bytes(b"raw request")
        assert rep.recv_bytes(timeout=1) == b"raw request"
        rep.send_bytes(b"raw reply")
        assert req.recv_bytes(timeout=1) == b"raw reply"
        stats = rep.stats()
        assert (stats["requests"], stats["replies"], stats["requesters"]) == (2, 2, 1)
        assert req.stats()["sent"] == 2
        assert req.stats()["received"] == 2


@pytest.mark.parametrize("serialization", ["msgpack", "raw"])
def test_other_serializations(channel: str, serialization: str) -> None:
    value = b"abc" if serialization == "raw" else {"a": [1, 2]}
    with Replier(channel, serialization=serialization) as rep, \
            Requester(channel, serialization=serialization) as req:
        req.send(value)
        rep.send(rep.recv(timeout=1))
        assert req.recv(timeout=1) == value


def test_requests_arrive_in_order_and_only_the_last_is_answered(channel: str) -> None:
    with Replier(channel) as rep, Requester(channel) as a, Requester(channel) as b:
        a.send("a0")
        b.send("b0")
        a.send("a1")  # a gives up on a0
        assert [rep.recv(timeout=0) for _ in range(3)] == ["a0", "b0", "a1"]
        assert rep.send("reply to a1") is True  # answers the request last received
        assert a.recv(timeout=1) == "reply to a1"
        assert b.recv(timeout=0) is None  # b0 was never answered
        assert b.stats()["outstanding"]


def test_late_reply_is_dropped_by_correlation_id(channel: str) -> None:
    with Replier(channel) as rep, Requester(channel) as req:
        with pytest.raises(SHMTimeoutError):
            req.request("slow", timeout=0.02)
        assert rep.recv(timeout=0) == "slow"
        rep.send("late answer to slow")
        # The requester moved on: the late reply is in its mailbox but is not accepted.
        req.send("fast")
        assert req.recv(timeout=0) is None
        assert req.stats()["given_up"] == 1
        assert rep.recv(timeout=0) == "fast"
        rep.send("answer to fast")
        assert req.recv(timeout=1) == "answer to fast"


def test_several_requesters_in_other_processes_get_only_their_replies(channel: str) -> None:
    count = 150
    with Replier(channel, num_slots=4) as rep:
        stop = threading.Event()
        server = threading.Thread(target=_serve, args=(rep, stop))
        server.start()
        try:
            procs = [spawn_python(REQUESTER, channel, str(count)) for _ in range(3)]
            outputs = [proc.communicate(timeout=8) for proc in procs]
        finally:
            stop.set()
            server.join()
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            assert f"done {count}" in out
        stats = rep.stats()
        give_ups = sum(1 for i in range(count) if i % 7 == 3)
        assert stats["requests"] == 3 * (count + give_ups)
        assert stats["abandoned"] == 0


def test_requester_killed_after_sending_does_not_wedge_the_replier(channel: str) -> None:
    with Replier(channel) as rep:
        proc = spawn_python(REQUEST_THEN_HANG, channel)
        try:
            wait_for_line(proc, "sent")
        finally:
            stop(proc)
        assert rep.recv(timeout=2) == "doomed"
        assert rep.stats()["requesters"] == 0  # stats() reaped the dead requester's row
        assert rep.send("nobody listens") is False
        assert rep.stats()["orphaned"] == 1
        with Requester(channel) as req:
            req.send("next")
            assert rep.recv(timeout=2) == "next"
            rep.send("served")
            assert req.recv(timeout=2) == "served"


def test_requester_killed_while_writing_its_request_is_skipped(channel: str) -> None:
    with Replier(channel) as rep, Requester(channel) as req:
        proc = spawn_python(DIE_WHILE_WRITING, channel)
        proc.communicate(timeout=8)
        assert proc.returncode == -signal.SIGKILL
        assert rep.stats()["pending"] == 1  # the dead requester's slot is claimed, unwritten
        req.send("behind the dead one")
        started = time.monotonic()
        assert rep.recv(timeout=2) == "behind the dead one"
        assert time.monotonic() - started < 1.0
        assert rep.stats()["abandoned"] == 1
        rep.send("ok")
        assert req.recv(timeout=1) == "ok"


def test_replier_that_dies_raises_peer_gone_in_the_requester(channel: str) -> None:
    proc = spawn_python(REPLIER_DIES_AFTER_ONE, channel)
    try:
        wait_for_line(proc, "ready")
        with Requester(channel) as req:
            req.send("hello")
            wait_for_line(proc, "got hello")
            proc.wait(timeout=5)
            started = time.monotonic()
            with pytest.raises(SHMPeerGoneError):
                req.recv(timeout=5)
            assert time.monotonic() - started < 1.0
            # A new replier reclaims the dead one's segment; the requester follows it.
            with Replier(channel) as rep:
                req.send("again")
                assert rep.recv(timeout=2) == "again"
                rep.send("back")
                assert req.recv(timeout=2) == "back"
                assert req.stats()["reconnects"] == 1
    finally:
        stop(proc)


def test_closing_the_replier_wakes_a_waiting_requester(channel: str) -> None:
    rep = Replier(channel)
    req = Requester(channel)
    req.send("pending")
    errors: list[BaseException] = []

    def wait_for_reply() -> None:
        try:
            req.recv(timeout=5)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_reply)
    started = time.monotonic()
    waiter.start()
    # Close while it sleeps: wait for its bit in the waiters word.
    assert poll_until(lambda: rep._segment.atom.load(L.WAITERS), timeout=2)
    rep.close()
    waiter.join(5)
    assert time.monotonic() - started < 1.0
    assert len(errors) == 1
    assert isinstance(errors[0], SHMPeerGoneError)
    with pytest.raises(SHMPeerGoneError):
        req.send("after close")
    req.close()


def test_dead_requesters_rows_are_reaped_for_new_ones(channel: str) -> None:
    with Replier(channel, max_requesters=1) as rep:
        proc = spawn_python(ATTACH_AND_HANG, channel)
        try:
            wait_for_line(proc, "ready")
            with pytest.raises(SHMConnectionError, match="max_requesters"):
                Requester(channel, timeout_connect=0)
        finally:
            stop(proc)
        with Requester(channel) as req:
            req.send(1)
            assert rep.recv(timeout=1) == 1


def test_full_queue_times_out(channel: str) -> None:
    with Replier(channel, num_slots=2) as rep, Requester(channel) as req:
        req.send(1)
        req.send(2)
        with pytest.raises(SHMBufferFullError, match="full"):
            req.send(3, timeout=0.02)
        with pytest.raises(SHMTimeoutError):
            req.request(4, timeout=0.02)
        assert rep.recv(timeout=0) == 1
        req.send(5, timeout=1)
        assert [rep.recv(timeout=0), rep.recv(timeout=0)] == [2, 5]


def test_oversize_payloads_raise_and_write_nothing(channel: str) -> None:
    with Replier(channel, slot_size=100) as rep, Requester(channel) as req:
        with pytest.raises(ValueError, match=r"500 bytes.*slot of 100 bytes"):
            req.send_bytes(b"x" * 500)
        assert rep.stats()["pending"] == 0
        assert rep.recv(timeout=0) is None
        req.send_bytes(b"small")
        assert rep.recv_bytes(timeout=1) == b"small"
        with pytest.raises(ValueError, match=r"300 bytes.*slot of 100 bytes"):
            rep.send_bytes(b"y" * 300)
        rep.send_bytes(b"fits")  # the request still awaits its reply
        assert req.recv_bytes(timeout=1) == b"fits"


def test_misuse_raises_value_error(channel: str) -> None:
    with Replier(channel) as rep, Requester(channel) as req:
        with pytest.raises(ValueError, match="no request is outstanding"):
            req.recv(timeout=0)
        with pytest.raises(ValueError, match="no request awaits a reply"):
            rep.send("unasked")
        req.send("q")
        rep.recv(timeout=1)
        rep.send("a")
        with pytest.raises(ValueError, match="no request awaits a reply"):
            rep.send("twice")


def test_close_is_idempotent_and_the_creator_unlinks(channel: str) -> None:
    rep = Replier(channel)
    path = Path("/dev/shm") / rep.segment_name
    req = Requester(channel)
    assert path.exists()
    req.close()
    req.close()
    assert path.exists()  # only the creator removes the segment
    assert req.closed
    with pytest.raises(ValueError, match="closed"):
        req.send(1)
    rep.close()
    rep.close()
    assert not path.exists()
    with pytest.raises(ValueError, match="closed"):
        rep.recv(timeout=0)


def test_connect_timeout_and_live_replier_conflict(channel: str) -> None:
    with pytest.raises(SHMConnectionError, match="no replier"):
        Requester(channel, timeout_connect=0.01)
    with Replier(channel), pytest.raises(SHMConnectionError, match="already has a live"):
        Replier(channel)


def test_layout_words_are_where_the_spec_says(channel: str) -> None:
    with Replier(channel, num_slots=4) as rep, Requester(channel) as req:
        req.send("q")
        atom = rep._segment.atom
        lay = rep._segment.layout
        assert atom.load(L.QUEUE_TAIL) == 1
        assert atom.load(lay.entries_offset) == L.queue_entry(0, L.QUEUE_READY)
        rep.recv(timeout=0)
        assert atom.load(lay.entries_offset) == L.queue_entry(1, L.QUEUE_FREE)
        assert atom.load(L.HEAD) == 1
        rep.send("a")
        correlation = atom.load(lay.record(req.row) + L.REC_REPLY)
        assert correlation == atom.load(L.REQ_LAST_CORRELATION)
        assert req.recv(timeout=0) == "a"
        state = atom.load(lay.record(req.row) + L.REC_STATE)
        assert state >> L.STATE_BITS == os.getpid()



class ReqRepModel(RuleBasedStateMachine):
    """Random sends, interrupted sends, receives, replies and restarts, against a model.

    The model is the request queue as a list (None for a request whose writer was
    interrupted while holding its slot), the request the replier holds, and each requester's
    outstanding request and latest reply. Checks: the queue is full exactly when the model
    says; requests arrive in order, abandoned ones skipped; a requester accepts only the reply
    to its outstanding request, never a stale one or another requester's.
    """

    SLOTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.saved_interval = reqrep.ABANDON_CHECK_INTERVAL
        reqrep.ABANDON_CHECK_INTERVAL = 0.001
        self.name = f"t_{secrets.token_hex(5)}"
        self.replier = Replier(self.name, num_slots=self.SLOTS, slot_size=16,
                               serialization="raw", max_requesters=4)
        self.requesters = [Requester(self.name, serialization="raw") for _ in range(3)]
        self.generation = [0, 0, 0]
        self.queue: list[tuple[int, int, int] | None] = []
        self.outstanding: list[tuple[int, int] | None] = [None, None, None]
        self.mailbox: list[tuple[int, int] | None] = [None, None, None]
        self.current: tuple[int, int, int] | None = None
        self.seq = 0
        self.consumed = 0
        self.abandoned = 0

    @staticmethod
    def _payload(index: int, generation: int, seq: int) -> bytes:
        return struct.pack("<BHI", index, generation, seq)

    @rule(index=st.integers(0, 2))
    def send(self, index: int) -> None:
        request = (index, self.generation[index], self.seq)
        full = len(self.queue) >= self.SLOTS
        try:
            self.requesters[index].send_bytes(self._payload(*request), timeout=0)
        except SHMBufferFullError:
            assert full
            return
        assert not full
        self.queue.append(request)
        self.outstanding[index] = request[1:]
        self.seq += 1

    @rule(index=st.integers(0, 2))
    def interrupted_send(self, index: int) -> None:
        if len(self.queue) >= self.SLOTS:
            return
        requester = self.requesters[index]

        def interrupt(*args: object) -> None:
            raise KeyboardInterrupt

        requester._write_request = interrupt  # type: ignore[method-assign, assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                requester.send_bytes(b"lost", timeout=0)
        finally:
            del requester._write_request
        self.queue.append(None)

    @rule()
    def receive(self) -> None:
        skipped = 0
        while self.queue and self.queue[0] is None:
            self.queue.pop(0)
            skipped += 1
        self.abandoned += skipped
        self.consumed += skipped
        if not self.queue:
            # Only abandoned requests (if any): recv skips them and finds nothing.
            deadline = time.monotonic() + 5
            while self.replier.stats()["abandoned"] < self.abandoned:
                assert self.replier.recv_bytes(timeout=0.001) is None
                assert time.monotonic() < deadline, "abandoned requests were not skipped"
            assert self.replier.recv_bytes(timeout=0) is None
            return
        data = self.replier.recv_bytes(timeout=5 if skipped else 0)
        request = self.queue.pop(0)
        assert request is not None
        self.consumed += 1
        assert data == self._payload(*request)
        self.current = request

    @rule()
    def reply(self) -> None:
        if self.current is None:
            with pytest.raises(ValueError, match="no request awaits"):
                self.replier.send_bytes(b"x")
            return
        index, generation, seq = self.current
        self.current = None
        delivered = self.replier.send_bytes(b"r" + self._payload(index, generation, seq))
        if generation == self.generation[index]:
            assert delivered
            self.mailbox[index] = (generation, seq)

    @rule(index=st.integers(0, 2))
    def receive_reply(self, index: int) -> None:
        requester = self.requesters[index]
        outstanding = self.outstanding[index]
        if outstanding is None:
            with pytest.raises(ValueError, match="no request is outstanding"):
                requester.recv_bytes(timeout=0)
            return
        data = requester.recv_bytes(timeout=0)
        if self.mailbox[index] == outstanding:
            assert data == b"r" + self._payload(index, *outstanding)
            self.outstanding[index] = None
        else:
            assert data is None

    @rule(index=st.integers(0, 2))
    def restart_requester(self, index: int) -> None:
        self.requesters[index].close()
        self.requesters[index] = Requester(self.name, serialization="raw")
        self.generation[index] += 1
        self.outstanding[index] = None
        self.mailbox[index] = None

    @invariant()
    def counters_match(self) -> None:
        stats = self.replier.stats()
        assert stats["requests"] == self.consumed - self.abandoned
        assert stats["abandoned"] == self.abandoned
        assert stats["pending"] == len(self.queue)

    def teardown(self) -> None:
        reqrep.ABANDON_CHECK_INTERVAL = self.saved_interval
        for requester in self.requesters:
            requester.close()
        self.replier.close()


TestReqRepModel = ReqRepModel.TestCase
TestReqRepModel.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_send_bytes_takes_any_contiguous_buffer(channel: str) -> None:
    import numpy as np

    values = np.arange(6, dtype=np.int32)
    with Replier(channel, slot_size=64) as rep, Requester(channel) as req:
        req.send_bytes(values)
        assert rep.recv_bytes(timeout=1) == values.tobytes()
        rep.send_bytes(values[::-1].copy())
        assert req.recv_bytes(timeout=1) == values[::-1].tobytes()
        with pytest.raises(ValueError, match=r"80 bytes.*slot of 64 bytes"):
            req.send_bytes(np.zeros(10))
