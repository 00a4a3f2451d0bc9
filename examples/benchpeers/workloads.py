"""The benchmark workloads, written once against :mod:`benchpeers.base`.

Every workload has a parent-side ``channels`` function that creates the channel specs, and
one function per process role ("a", "b") that runs in a spawned child. Role functions receive
the opened peer, the channel specs, the workload parameters and a dict of synchronisation
primitives (``barrier``, ``ack``, ``finished``, ``ready``, ``credits``, ``credits2``) created by
the parent, and return a JSON-serialisable dict.

Timing uses ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux, shared by all processes),
so a timestamp taken by the sender can be compared with the receiver's clock.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import (
    SEQ_PROBE,
    SEQ_STOP,
    SEQ_WAKE,
    ArraySender,
    ChannelSpec,
    Mode,
    Peer,
    Receiver,
    Sender,
    pack_header,
    unpack_header,
)

Sync = dict[str, Any]
Params = dict[str, Any]
Specs = dict[str, ChannelSpec]

BARRIER_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 10.0

KIB = 1024
MIB = 1024 * 1024
FRAME_1080P = 1080 * 1920 * 3  # bytes of a 1080p RGB uint8 camera frame


def now_ns() -> int:
    """Shared monotonic clock in nanoseconds."""
    return time.perf_counter_ns()


def _wait(sync: Sync) -> None:
    sync["barrier"].wait(BARRIER_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# handshakes
# ---------------------------------------------------------------------------------------------
def probe_until_echo(s: Sender, r: Receiver, size: int) -> None:
    """Ping-pong initiator: send probes until one comes back (covers slow joiners), drain."""
    msg = s.new_message(size)
    pack_header(msg, SEQ_PROBE, 0)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while True:
        s.send(msg)
        if r.recv_for(0.02) is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("no echo to connection probes")
    while r.recv_for(0.05) is not None:  # swallow echoes of the extra probes
        pass


def probe_until_ack(s: Sender, size: int, ack: Any) -> None:
    """One-way producer: send probes until the consumer sets ``ack``."""
    msg = s.new_message(size)
    pack_header(msg, SEQ_PROBE, 0)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while not ack.is_set():
        s.send(msg)
        if ack.wait(0.02):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("consumer never acknowledged the connection probes")
    time.sleep(0.05)  # let in-flight probes arrive before the measurement starts


def probe_array_until_ack(tx: ArraySender, src: Any, ack: Any) -> None:
    """Array producer: send ``src`` as probes until the consumer sets ``ack``."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while not ack.is_set():
        tx.send_array(src, SEQ_PROBE, 0)
        if ack.wait(0.05):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("array consumer never acknowledged the probes")


# ---------------------------------------------------------------------------------------------
# 1. ping-pong latency
# ---------------------------------------------------------------------------------------------
def _pp_cases(p: Params) -> list[tuple[Mode, int]]:
    return [(mode, size) for mode in p["modes"] for size in p["sizes"]]


def pingpong_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """Two bytes channels (ping a->b, pong b->a) per (receive mode, payload size)."""
    specs: Specs = {}
    for mode, size in _pp_cases(p):
        for d in ("ping", "pong"):
            name = f"{p['tag']}_{d}{mode}{size}"
            specs[f"{d}-{mode}-{size}"] = peer.make_channel(ctx, name, "bytes", size)
    return specs


def pingpong_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Initiator: measures round-trip times; one-way latency = RTT / 2.

    Each case stops after ``iterations`` round trips or ``max_seconds``, whichever comes
    first (busy-polling on a loaded 2-core machine can make single round trips take ms).
    """
    out: dict[str, Any] = {}
    budget_ns = int(p["max_seconds"] * 1e9)
    for mode, size in _pp_cases(p):
        s = peer.open_sender(specs[f"ping-{mode}-{size}"], mode)
        _wait(sync)
        r = peer.open_receiver(specs[f"pong-{mode}-{size}"], mode)
        _wait(sync)
        probe_until_echo(s, r, size)
        msg = s.new_message(size)
        rtts = []
        warmup = p["warmup"]
        t_begin = now_ns()
        for i in range(warmup + p["iterations"]):
            pack_header(msg, i, 0)
            t0 = now_ns()
            s.send(msg)
            while True:
                seq, _ = unpack_header(r.recv())
                if seq == i:
                    break
            t1 = now_ns()
            if i >= warmup:
                rtts.append(t1 - t0)
            if t1 - t_begin > budget_ns and len(rtts) >= 20:
                break
        pack_header(msg, SEQ_STOP, 0)
        s.send(msg)
        r.recv_for(2.0)
        _wait(sync)
        r.close()
        s.close()
        out[f"{mode}-{size}"] = {"rtt_ns": rtts}
    return out


def pingpong_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Echo side: sends back every message until the stop marker."""
    for mode, size in _pp_cases(p):
        s = peer.open_sender(specs[f"pong-{mode}-{size}"], mode)
        _wait(sync)
        r = peer.open_receiver(specs[f"ping-{mode}-{size}"], mode)
        _wait(sync)
        while True:
            msg = r.recv()
            s.send(msg)
            if unpack_header(msg)[0] == SEQ_STOP:
                break
        _wait(sync)
        r.close()
        s.close()
    return {}


# ---------------------------------------------------------------------------------------------
# 2. streaming throughput of small messages
# ---------------------------------------------------------------------------------------------
def stream_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One bytes channel a->b tuned for throughput."""
    spec = peer.make_channel(ctx, f"{p['tag']}_stream", "bytes", p["size"])
    spec.purpose = "throughput"
    spec.data["block_send"] = bool(p.get("block_send"))  # shm_comm: send_bytes(block=True)
    return {"data": spec}


def stream_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Producer: sends as fast as it can for ``count`` messages or ``seconds``."""
    s = peer.open_sender(specs["data"], "block")
    _wait(sync)
    _wait(sync)
    probe_until_ack(s, p["size"], sync["ack"])
    msg = s.new_message(p["size"])
    limit_ns = int(p["seconds"] * 1e9)
    attempted = accepted = 0
    t_start = now_ns()
    for i in range(p["count"]):
        pack_header(msg, i, 0)
        accepted += bool(s.send(msg))
        attempted += 1
        if not i & 1023 and now_ns() - t_start > limit_ns:
            break
    t_end = now_ns()
    stats = s.stats()
    pack_header(msg, SEQ_STOP, 0)
    deadline = time.monotonic() + p["drain_seconds"]
    while not sync["finished"].wait(0.01) and time.monotonic() < deadline:
        s.send(msg)
    _wait(sync)
    s.close()
    return {
        "attempted": attempted,
        "accepted": accepted,
        "t_start": t_start,
        "t_end": t_end,
        "sender_stats": _jsonable(stats),
    }


def stream_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Consumer: counts data messages until the stop marker."""
    _wait(sync)
    r = peer.open_receiver(specs["data"], "block")
    _wait(sync)
    received = reordered = 0
    last_seq = -1
    t_first = t_last = 0
    ack = sync["ack"]
    running = True
    while running:
        for m in r.recv_many():
            seq = unpack_header(m)[0]
            if seq >= 0:
                t_last = now_ns()
                if not received:
                    t_first = t_last
                received += 1
                if seq < last_seq:
                    reordered += 1
                last_seq = seq
            elif seq == SEQ_PROBE:
                if not ack.is_set():
                    ack.set()
            elif seq == SEQ_STOP:
                running = False
                break
    sync["finished"].set()
    stats = r.stats()
    _wait(sync)
    r.close()
    return {
        "received": received,
        "reordered": reordered,
        "t_first": t_first,
        "t_last": t_last,
        "receiver_stats": _jsonable(stats),
    }


# ---------------------------------------------------------------------------------------------
# 3. large arrays
# ---------------------------------------------------------------------------------------------
def array_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One array channel per (send variant, array size)."""
    specs: Specs = {}
    for variant in p["variants"]:
        for nbytes in p["sizes"]:
            key = f"{variant}-{nbytes}"
            spec = peer.make_channel(
                ctx, f"{p['tag']}_arr{variant}{nbytes}", "array", nbytes, (nbytes // 8,)
            )
            spec.data["variant"] = variant
            spec.purpose = "throughput"
            specs[key] = spec
    return specs


def _counts(p: Params, nbytes: int) -> tuple[int, int, int]:
    """(warm-up, latency, throughput) message counts for an array size."""
    if nbytes >= 8 * MIB:
        return p["warm"], p["lat_big"], p["thr_big"]
    return p["warm"], p["lat_small"], p["thr_small"]


def array_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Producer: warm-up (touch every buffer once), then phase 1 with one message in
    flight (per-message latency), then phase 2 with two in flight (GB/s).

    Flow control is a semaphore of credits returned by the consumer, so no transport can
    drop or queue unboundedly; the consumer never copies a received array unless the
    transport itself does.
    """
    out: dict[str, Any] = {}
    credits = sync["credits"]
    for key, spec in specs.items():
        n_warm, n_lat, n_thr = _counts(p, spec.size)
        tx = peer.open_array_sender(spec)
        src = tx.new_source(spec.shape)
        src[:] = 1.0
        _wait(sync)
        _wait(sync)
        probe_array_until_ack(tx, src, sync["ack"])
        send_ns = []
        t2_start = 0
        total = n_warm + n_lat + n_thr
        for i in range(total):
            if i == n_warm + n_lat:
                t2_start = now_ns()
            if not credits.acquire(timeout=30):
                raise TimeoutError("consumer stopped returning credits")
            t0 = now_ns()
            tx.send_array(src, i, t0)
            if i >= n_warm:
                send_ns.append(now_ns() - t0)
        _wait(sync)
        sync["ack"].clear()
        tx.close()
        out[key] = {"send_ns": send_ns, "t2_start": t2_start, "n_lat": n_lat, "n_thr": n_thr}
        _wait(sync)
    return out


def array_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Consumer: obtains each array as an ndarray, returns a credit per message."""
    out: dict[str, Any] = {}
    credits = sync["credits"]
    for key, spec in specs.items():
        n_warm, n_lat, n_thr = _counts(p, spec.size)
        last = n_warm + n_lat + n_thr - 1
        _wait(sync)
        rx = peer.open_array_receiver(spec)
        _wait(sync)
        lat_ns = []
        t_last = 0
        ok_shape = True
        while True:
            seq, stamp, arr = rx.recv_array()
            t = now_ns()
            if seq == SEQ_PROBE:
                if not sync["ack"].is_set():
                    sync["ack"].set()
                    time.sleep(0.1)  # let the remaining probes arrive, then drop them
                    credits.release()  # window of 1 for warm-up and latency phases
                continue
            ok_shape = ok_shape and isinstance(arr, np.ndarray) and arr.shape == spec.shape
            if n_warm <= seq < n_warm + n_lat:
                lat_ns.append(t - stamp)
            t_last = t
            credits.release()
            if seq == n_warm + n_lat - 1:
                credits.release()  # window of 2 for the throughput phase
            if seq == last:
                break
        _wait(sync)
        while credits.acquire(False):  # reset the window for the next channel
            pass
        rx.close()
        out[key] = {"lat_ns": lat_ns, "t_last": t_last, "ndarray": ok_shape}
        _wait(sync)
    return out


# ---------------------------------------------------------------------------------------------
# 4 + 5. wake-up latency of a blocked receiver, then CPU used while blocked on a silent channel
# ---------------------------------------------------------------------------------------------
def wake_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One small-message channel a->b."""
    return {"data": peer.make_channel(ctx, f"{p['tag']}_wake", "bytes", 64)}


def wake_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Sender: ``count`` paced messages (the receiver is asleep in recv each time), then,
    if ``idle_seconds`` > 0, silence for that long followed by a wake-up message."""
    s = peer.open_sender(specs["data"], p["mode"])
    _wait(sync)
    _wait(sync)
    probe_until_ack(s, 64, sync["ack"])
    msg = s.new_message(64)
    for i in range(p["count"]):
        time.sleep(p["gap"])
        pack_header(msg, i, now_ns())
        s.send(msg)
    if p["idle_seconds"] > 0:
        if not sync["ready"].wait(30):
            raise TimeoutError("receiver did not start the idle phase")
        time.sleep(p["idle_seconds"])
        pack_header(msg, SEQ_WAKE, 0)
        deadline = time.monotonic() + 10
        while not sync["finished"].wait(0.02) and time.monotonic() < deadline:
            s.send(msg)
    _wait(sync)
    s.close()
    return {}


def _wake_sample(message: Any, received_ns: int, lat: list[int], count: int) -> bool:
    """Adds the wake-up latency of one message received at ``received_ns`` to ``lat`` (stray
    connection probes add nothing); True when it was the last of ``count``."""
    seq, stamp = unpack_header(message)
    if seq < 0:
        return False
    lat.append(received_ns - stamp)
    return seq == count - 1


class _IdleUsage:
    """This process's CPU time, wall time and context switches from its creation to
    :meth:`since`: what a receiver costs while it waits for a message that does not come."""

    def __init__(self) -> None:
        self._rusage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def since(self) -> dict[str, Any]:
        cpu = time.process_time()
        wall = time.monotonic()
        rusage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "idle_cpu_s": cpu - self._cpu,
            "idle_wall_s": wall - self._wall,
            "idle_vcsw": rusage.ru_nvcsw - self._rusage.ru_nvcsw,
            "idle_ivcsw": rusage.ru_nivcsw - self._rusage.ru_nivcsw,
        }


def wake_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Receiver: wake-up latency samples, then CPU time while blocked for ``idle_seconds``."""
    if p["mode"] == "async":
        import asyncio

        return asyncio.run(_wake_b_async(peer, specs, p, sync))
    _wait(sync)
    r = peer.open_receiver(specs["data"], p["mode"])
    _wait(sync)
    while unpack_header(r.recv())[0] != SEQ_PROBE:
        pass
    sync["ack"].set()
    out: dict[str, Any] = {}
    lat: list[int] = []
    while len(lat) < p["count"]:
        m = r.recv()
        if _wake_sample(m, now_ns(), lat, p["count"]):
            break
    out["wake_ns"] = lat
    if p["idle_seconds"] > 0:
        sync["ready"].set()
        idle = _IdleUsage()
        while unpack_header(r.recv())[0] != SEQ_WAKE:
            pass  # stray connection probes
        used = idle.since()
        sync["finished"].set()
        out.update(used)
    _wait(sync)
    r.close()
    return out


async def _wake_b_async(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """:func:`wake_b` with ``await r.recv_async()`` in one asyncio loop, started before the
    measurements (the loop's start-up is not counted); the same steps, line for line."""
    _wait(sync)
    r = peer.open_receiver(specs["data"], p["mode"])
    _wait(sync)
    while unpack_header(await r.recv_async())[0] != SEQ_PROBE:
        pass
    sync["ack"].set()
    out: dict[str, Any] = {}
    lat: list[int] = []
    while len(lat) < p["count"]:
        m = await r.recv_async()
        if _wake_sample(m, now_ns(), lat, p["count"]):
            break
    out["wake_ns"] = lat
    if p["idle_seconds"] > 0:
        sync["ready"].set()
        idle = _IdleUsage()
        while unpack_header(await r.recv_async())[0] != SEQ_WAKE:
            pass  # stray connection probes
        used = idle.since()
        sync["finished"].set()
        out.update(used)
    _wait(sync)
    r.close()
    return out


# ---------------------------------------------------------------------------------------------
# shm_comm only: recv_batch vs recv loop, loan cost, memcpy reference
# ---------------------------------------------------------------------------------------------
def blocksend_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """Ping and pong channels of 64 B for the blocking-send ping-pong."""
    return {d: peer.make_channel(ctx, f"{p['tag']}_bs{d}", "bytes", 64) for d in ("ping", "pong")}


def blocksend_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Busy-poll ping-pong of 64 B that alternates, chunk by chunk on the same channels,
    ``send_bytes(block=False)`` and ``send_bytes(block=True)`` (both sides), so that the two
    are compared in the same run under the same noise. RTT / 2 per round trip."""
    import shm_comm

    pub = shm_comm.Publisher(str(specs["ping"].data["channel"]), slot_size=64)
    _wait(sync)
    sub = shm_comm.Subscriber(str(specs["pong"].data["channel"]), poll_interval=0,
                              timeout_connect=HANDSHAKE_TIMEOUT)
    _wait(sync)
    out: dict[str, list[int]] = {"nonblock_ns": [], "block_ns": []}
    msg = bytearray(64)
    for chunk in range(2 * p["chunks"] + 1):
        block = bool(chunk % 2)
        msg[0] = block
        for _ in range(p["chunk"]):
            t0 = now_ns()
            pub.send_bytes(msg, block=block, timeout=5.0)
            sub.recv_bytes()
            if chunk:  # the first chunk warms up
                out["block_ns" if block else "nonblock_ns"].append(now_ns() - t0)
    msg[1] = 1
    pub.send_bytes(msg)
    _wait(sync)
    sub.close()
    pub.close()
    return out


def blocksend_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Echo side: answers with the blocking mode the message asks for."""
    import shm_comm

    pub = shm_comm.Publisher(str(specs["pong"].data["channel"]), slot_size=64)
    sub = shm_comm.Subscriber(str(specs["ping"].data["channel"]), poll_interval=0,
                              timeout_connect=HANDSHAKE_TIMEOUT)
    _wait(sync)
    _wait(sync)
    while True:
        msg = sub.recv_bytes()
        pub.send_bytes(msg, block=msg[0] == 1, timeout=5.0)
        if msg[1]:
            break
    _wait(sync)
    sub.close()
    pub.close()
    return {}


def batch_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One 6 x float64 array channel."""
    return {"data": peer.make_channel(ctx, f"{p['tag']}_batch", "array", 48, (6,))}


def batch_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Publishes ``n`` messages per round and waits until the consumer has read them."""
    import shm_comm

    name = str(specs["data"].data["channel"])
    pub = shm_comm.ArrayPublisher(name, shape=(6,), dtype=np.float64, num_slots=p["slots"])
    _wait(sync)
    _wait(sync)  # subscriber attached
    x = np.zeros(6)
    refused = 0
    for _ in range(2 * p["rounds"]):
        for i in range(p["n"]):
            x[0] = i
            refused += not pub.send(x)
        sync["credits"].release()  # "n messages queued"
        if not sync["credits2"].acquire(timeout=30):
            raise TimeoutError("batch consumer stalled")
    _wait(sync)
    pub.close()
    return {"refused": refused}


def batch_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Times ``recv_batch(n)`` against ``n`` single ``recv`` calls on the same backlog."""
    import shm_comm

    name = str(specs["data"].data["channel"])
    _wait(sync)
    sub = shm_comm.ArraySubscriber(name)
    _wait(sync)
    n = p["n"]
    batch_ns, loop_ns, got_batch, got_loop = [], [], [], []
    out = np.empty((n, 6))
    for _ in range(p["rounds"]):
        if not sync["credits"].acquire(timeout=30):
            raise TimeoutError("batch producer stalled")
        t0 = now_ns()
        arr = sub.recv_batch(max_n=n, timeout=0.0)
        batch_ns.append(now_ns() - t0)
        got_batch.append(len(arr))
        sync["credits2"].release()
        if not sync["credits"].acquire(timeout=30):
            raise TimeoutError("batch producer stalled")
        k = 0
        t0 = now_ns()
        for k in range(n):
            a = sub.recv(timeout=0, copy=False)
            if a is None:
                break
            out[k] = a
        else:
            k = n
        loop_ns.append(now_ns() - t0)
        got_loop.append(k)
        sync["credits2"].release()
    _wait(sync)
    sub.close()
    return {"batch_ns": batch_ns, "loop_ns": loop_ns, "got_batch": got_batch, "got_loop": got_loop}


def bstream_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One raw 64 B channel for the batched streaming run."""
    return {"data": peer.make_channel(ctx, f"{p['tag']}_bstream", "bytes", p["size"])}


def bstream_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Producer: ``send_bytes_batch`` of ``batch`` messages at a time, waiting for room."""
    import shm_comm

    name = str(specs["data"].data["channel"])
    pub = shm_comm.Publisher(name, num_slots=p["slots"], slot_size=p["size"])
    _wait(sync)
    _wait(sync)  # subscriber attached
    msgs = [bytes(p["size"])] * p["batch"]
    sent = 0
    t_start = now_ns()
    while sent < p["count"]:
        n = pub.send_bytes_batch(msgs, block=True, timeout=10.0)
        if not n:
            raise TimeoutError("batched stream consumer stalled")
        sent += n
    t_end = now_ns()
    stats = pub.stats()
    _wait(sync)
    pub.close()
    return {"sent": sent, "t_start": t_start, "t_end": t_end, "drops": stats["drop_count"]}


def bstream_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Consumer: ``recv_bytes_batch`` until everything arrived."""
    import shm_comm

    name = str(specs["data"].data["channel"])
    _wait(sync)
    sub = shm_comm.Subscriber(name)
    _wait(sync)
    received = 0
    t_first = t_last = 0
    while received < p["count"]:
        batch = sub.recv_bytes_batch(8192, timeout=10.0)
        if not batch:
            break
        t_last = now_ns()
        if not received:
            t_first = t_last
        received += len(batch)
    stats = sub.stats()
    _wait(sync)
    sub.close()
    return {"received": received, "t_first": t_first, "t_last": t_last,
            "dropped": stats["dropped"]}


def micro_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One array channel per size for the loan/send micro-benchmark."""
    return {
        str(n): peer.make_channel(ctx, f"{p['tag']}_loan{n}", "array", n, (n // 8,))
        for n in p["sizes"]
    }


def micro_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """The micro-benchmark is single-process; this role idles (lets it join a combo)."""
    return {}


def micro_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Single process: np.copyto (memcpy reference), ArrayPublisher.send, loan() cost.

    memcpy, send and the two loans are interleaved rep by rep, so that noise from other
    processes hits all of them alike; the memcpy reference cycles through as many destination
    buffers as the publisher has slots, so that cache effects are comparable. Then the empty
    loan again, back to back: its own cost, without the cache misses that the big copies
    before it cause (reported separately as the cold-cache figure).
    """
    import shm_comm

    slots = 4
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        nbytes = spec.size
        reps = p["reps_big"] if nbytes >= 8 * MIB else p["reps_small"]
        src = np.ones(spec.shape)
        dsts = [np.zeros(spec.shape) for _ in range(slots)]
        pub = shm_comm.ArrayPublisher(
            str(spec.data["channel"]), shape=spec.shape, dtype=np.float64, num_slots=slots
        )
        for d in dsts:  # touch every buffer once
            np.copyto(d, src)
            pub.send(src)
        times: dict[str, list[int]] = {"memcpy": [], "send": [], "loan": [], "loan_cold": [],
                                       "loan_fill": []}
        for i in range(reps):
            t0 = now_ns()
            np.copyto(dsts[i % slots], src)
            t1 = now_ns()
            pub.send(src)
            t2 = now_ns()
            with pub.loan() as o:
                o.flat[0] = 1.0
            t3 = now_ns()
            with pub.loan() as o:
                np.copyto(o, src)
            t4 = now_ns()
            times["memcpy"].append(t1 - t0)
            times["send"].append(t2 - t1)
            times["loan_cold"].append(t3 - t2)
            times["loan_fill"].append(t4 - t3)
        # The loan's own cost, back to back: above, at 16 MiB, it follows 32 MiB of copies
        # that flushed the caches, which slows any Python code down (see performance.md).
        for _ in range(reps):
            t0 = now_ns()
            with pub.loan() as o:
                o.flat[0] = 1.0
            times["loan"].append(now_ns() - t0)
        pub.close()
        out[key] = {"nbytes": nbytes, "reps": reps}
        out[key].update({f"{k}_ns": float(np.median(v)) for k, v in times.items()})
    return out


# ---------------------------------------------------------------------------------------------
# 6. first frames of a fresh channel, what opening it costs, and its shared memory
# ---------------------------------------------------------------------------------------------
def shm_mapped() -> dict[str, tuple[int, int]]:
    """The ``/dev/shm`` files this process maps: ``dev:inode -> (size, bytes allocated)``.

    Read from ``/proc/self/maps`` and stat-ed through ``/proc/self/map_files`` (which works
    for files already unlinked, as some peers do), so the figure is exact and counts nothing
    of other processes on the machine.
    """
    out: dict[str, tuple[int, int]] = {}
    try:
        with open("/proc/self/maps") as fh:
            lines = fh.readlines()
    except OSError:
        return out
    for line in lines:
        parts = line.rstrip("\n").split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/dev/shm/"):
            continue
        key = f"{parts[3]}:{parts[4]}"
        if key in out:
            continue
        try:
            st = os.stat(f"/proc/self/map_files/{parts[0]}")
        except OSError:
            try:
                st = os.stat(parts[5].removesuffix(" (deleted)"))
            except OSError:
                continue
        out[key] = (st.st_size, st.st_blocks * 512)
    return out


def _new_mappings(before: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: v for k, v in shm_mapped().items() if k not in before}


def first_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """One fresh array channel per size (the peer's primary array path)."""
    specs: Specs = {}
    for nbytes in p["sizes"]:
        spec = peer.make_channel(
            ctx, f"{p['tag']}_first{nbytes}", "array", nbytes, (nbytes // 8,)
        )
        spec.data["variant"] = peer.array_variants[0]
        spec.purpose = "throughput"
        specs[str(nbytes)] = spec
    return specs


def first_a(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Producer: opens a fresh channel (timed), then sends ``count`` arrays one at a time
    (a credit each), the first ones into buffers nobody has used yet; then reports the
    ``/dev/shm`` files it mapped for the channel."""
    out: dict[str, Any] = {}
    credits = sync["credits"]
    for key, spec in specs.items():
        before = shm_mapped()
        t0 = now_ns()
        tx = peer.open_array_sender(spec)
        open_ns = now_ns() - t0
        src = tx.new_source(spec.shape)
        src[:] = 1.0
        _wait(sync)
        _wait(sync)
        probe_array_until_ack(tx, src, sync["ack"])
        for i in range(p["count"]):
            if not credits.acquire(timeout=30):
                raise TimeoutError("consumer stopped returning credits")
            tx.send_array(src, i, now_ns())
        _wait(sync)
        mapped = _new_mappings(before)
        sync["ack"].clear()
        tx.close()
        out[key] = {"open_ns": open_ns, "shm": mapped}
        _wait(sync)
    return out


def first_b(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
    """Consumer: attaches (timed); per array, the latency from the send stamp to having read
    one word of every 4 KiB page of it (what first-touch costs show up in)."""
    out: dict[str, Any] = {}
    credits = sync["credits"]
    for key, spec in specs.items():
        _wait(sync)
        before = shm_mapped()
        t0 = now_ns()
        rx = peer.open_array_receiver(spec)
        open_ns = now_ns() - t0
        _wait(sync)
        lat_ns: list[int] = []
        while len(lat_ns) < p["count"]:
            seq, stamp, arr = rx.recv_array()
            if seq == SEQ_PROBE:
                if not sync["ack"].is_set():
                    sync["ack"].set()
                    time.sleep(0.1)  # let the remaining probes arrive, then drop them
                    credits.release()
                continue
            float(arr.reshape(-1)[::512].sum())  # one float64 per 4 KiB page
            lat_ns.append(now_ns() - stamp)
            credits.release()
        _wait(sync)
        mapped = _new_mappings(before)
        while credits.acquire(False):
            pass
        rx.close()
        out[key] = {"lat_ns": lat_ns, "open_ns": open_ns, "shm": mapped}
        _wait(sync)
    return out


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
RoleFn = Callable[[Peer, Specs, Params, Sync], dict[str, Any]]


@dataclass(frozen=True)
class Workload:
    """Parent-side channel factory plus the role functions run in the children."""

    channels: Callable[[Peer, Any, Params], Specs]
    roles: dict[str, RoleFn]


class PartialFailure(Exception):
    """A combined task failed in one part; carries the results of the parts before it."""

    def __init__(self, part: str, partial: dict[str, Any], cause: BaseException) -> None:
        super().__init__(f"{part}: {type(cause).__name__}: {cause}")
        self.partial = partial


def part_workload(part: str) -> str:
    """A part "stream@block" runs workload "stream" (the suffix keeps part names unique)."""
    return part.split("@", 1)[0]


def _part_tag(p: Params, part: str) -> str:
    return str(p["tag"]) + part.replace("@", "")


def combo_channels(peer: Peer, ctx: Any, p: Params) -> Specs:
    """Channels of every part of a combined task, keys prefixed with the part name."""
    specs: Specs = {}
    for part in p["parts"]:
        sub = dict(p[part], tag=_part_tag(p, part))
        for key, spec in WORKLOADS[part_workload(part)].channels(peer, ctx, sub).items():
            specs[f"{part}:{key}"] = spec
    return specs


def _combo_role(role: str) -> RoleFn:
    """Role function running several workloads one after the other in the same processes.

    Saves a process spawn per workload (~1 s on a small machine). Between parts both
    processes meet at a barrier and the shared events are reset.
    """

    def run(peer: Peer, specs: Specs, p: Params, sync: Sync) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in p["parts"]:
            sub = dict(p[part], tag=_part_tag(p, part))
            prefix = part + ":"
            sub_specs = {k[len(prefix) :]: v for k, v in specs.items() if k.startswith(prefix)}
            try:
                result = WORKLOADS[part_workload(part)].roles[role](peer, sub_specs, sub, sync)
                _wait(sync)
                if role == "a":
                    for ev in ("ack", "finished", "ready"):
                        sync[ev].clear()
                _wait(sync)
            except Exception as exc:
                raise PartialFailure(part, out, exc) from exc
            out[part] = result
            if "report_part" in sync:
                sync["report_part"](part, result)
        return out

    return run


WORKLOADS: dict[str, Workload] = {
    "pingpong": Workload(pingpong_channels, {"a": pingpong_a, "b": pingpong_b}),
    "stream": Workload(stream_channels, {"a": stream_a, "b": stream_b}),
    "arrays": Workload(array_channels, {"a": array_a, "b": array_b}),
    "wake": Workload(wake_channels, {"a": wake_a, "b": wake_b}),
    "idle": Workload(wake_channels, {"a": wake_a, "b": wake_b}),
    "batch": Workload(batch_channels, {"a": batch_a, "b": batch_b}),
    "blocksend": Workload(blocksend_channels, {"a": blocksend_a, "b": blocksend_b}),
    "bstream": Workload(bstream_channels, {"a": bstream_a, "b": bstream_b}),
    "micro": Workload(micro_channels, {"a": micro_a, "b": micro_b}),
    "first": Workload(first_channels, {"a": first_a, "b": first_b}),
}
WORKLOADS["combo"] = Workload(combo_channels, {"a": _combo_role("a"), "b": _combo_role("b")})


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (np.integer, np.floating)):
            out[k] = v.item()
        else:
            out[k] = repr(v)
    return out
