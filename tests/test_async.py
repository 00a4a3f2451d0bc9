"""Event loops: awaiting channel ends (recv_async, async for, request_async) and fileno().

Publishers run in real separate processes where it matters (wake-ups across processes,
a killed publisher); the loops are plain ``asyncio.run`` and, through anyio, ``trio.run``.
Nothing here sleeps to synchronise: processes print lines, awaits have timeouts.
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pytest
from helpers import ROOT, Spawn
from test_processes import CONTROLLED_PUBLISHER

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    Puller,
    Pusher,
    Requester,
    SHMClosedError,
    SHMPeerGoneError,
    SHMTimeoutError,
    Subscriber,
    force_unlink,
    notify,
)
from shm_comm._atomic import AtomicBuffer, has_futex
from shm_comm.utils import poll_until

SEQ = struct.Struct("<q")

# Sends raw 8-byte sequence numbers on command: "burst N" (as fast as it can, never
# waiting), "bursts K N" (K bursts of N, 1 ms apart), "paced N" (waiting for room, so
# nothing is lost), "end" (a -1 that waits for room), "stats", "quit".
SEQ_PUBLISHER = r"""
import struct, sys, time
from shm_comm import Publisher
SEQ = struct.Struct("<q")
pub = Publisher(sys.argv[1], num_slots=int(sys.argv[2]), slot_size=64)
print("READY", flush=True)
n = 0
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "burst":
        for _ in range(int(cmd[1])):
            pub.send_bytes(SEQ.pack(n))
            n += 1
    elif cmd[0] == "bursts":
        for _ in range(int(cmd[1])):
            time.sleep(0.001)  # gaps, so that the subscriber also waits (and is cancelled)
            for _ in range(int(cmd[2])):
                pub.send_bytes(SEQ.pack(n))
                n += 1
    elif cmd[0] == "paced":
        count = int(cmd[1])
        while count:
            k = min(count, 64)
            sent = pub.send_bytes_batch([SEQ.pack(n + i) for i in range(k)], block=True,
                                        timeout=60)
            assert sent == k, sent
            n += k
            count -= k
    elif cmd[0] == "end":
        assert pub.send_bytes(SEQ.pack(-1), block=True, timeout=60)
    elif cmd[0] == "stats":
        print("STATS", pub.stats()["drop_count"], flush=True)
        continue
    elif cmd[0] == "quit":
        break
    print("SENT", n, flush=True)
pub.close()
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(coro: Any, timeout: float = 60.0) -> Any:
    """asyncio.run with an overall limit, so that a lost wake-up fails instead of hanging."""

    async def limited() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(limited())


# --------------------------------------------------------------------------- basics


def test_recv_async_across_processes(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, "{}", stdin=True)
    pub.wait_for("READY")
    with Subscriber(channel) as sub:

        async def main() -> None:
            pub.tell("send 3")  # while we are already waiting, or before: either way
            assert [await sub.recv_async(timeout=10) for _ in range(3)] == [0, 1, 2]
            started = time.monotonic()
            assert await sub.recv_async(timeout=0.2) is None
            assert 0.15 < time.monotonic() - started < 5
            assert await sub.recv_async(timeout=0) is None
            pub.tell("send 2")
            assert await sub.recv_bytes_async(timeout=10) is not None
            assert await sub.recv_batch_async(timeout=10) == [4]
            assert await sub.recv_batch_async(timeout=0.05) == []

        run(main())
        stats = sub.stats()
        assert (stats["received"], stats["dropped"]) == (5, 0)


def test_trio_through_anyio(channel: str) -> None:
    trio = pytest.importorskip("trio")
    pytest.importorskip("anyio")
    with Publisher(channel) as pub, Subscriber(channel) as sub, \
            ArrayPublisher(channel + "a", dtype=np.float32, shape=(3,)) as apub, \
            ArraySubscriber(channel + "a") as asub:
        got: list[Any] = []

        async def produce() -> None:
            for i in range(3):
                await trio.sleep(0.01)
                pub.send(i)
                apub.send(np.full(3, i, np.float32))

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                got.append(await sub.recv_async(timeout=10))
                async for msg in sub:
                    got.append(msg)
                    if msg == 2:
                        break
                for i in range(3):
                    arr = await asub.recv_async(timeout=10)
                    assert arr is not None
                    assert arr.tolist() == [i] * 3
            assert await sub.recv_async(timeout=0.05) is None
            with trio.move_on_after(0.05):  # cancelled by trio: loses nothing
                await sub.recv_async()
            pub.send("after")
            assert await sub.recv_async(timeout=10) == "after"

            async def close_soon() -> None:
                await trio.sleep(0.05)
                sub.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_soon)
                async for _ in sub:  # ends when closed
                    raise AssertionError("no message was sent")

        trio.run(main)
        assert got == [0, 1, 2]


def test_one_task_at_a_time(channel: str) -> None:
    with Publisher(channel), Subscriber(channel) as sub:

        async def main() -> None:
            first = asyncio.ensure_future(sub.recv_async())
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError, match="another task is already waiting"):
                await sub.recv_async(timeout=1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await sub.recv_async(timeout=0.01) is None  # usable again

        run(main())


def test_closed_subscriber_refuses_async(channel: str) -> None:
    with Publisher(channel):
        sub = Subscriber(channel)
        sub.close()
        with pytest.raises(ValueError, match="closed"):
            run(sub.recv_async())
        with pytest.raises(ValueError, match="closed"):
            sub.fileno()

        async def iterate() -> list[Any]:
            return [m async for m in sub]

        assert run(iterate()) == []


# --------------------------------------------------------------------------- many awaiters


def test_sixteen_subscribers_awaited_in_one_loop(channel: str, spawn: Spawn) -> None:
    pub = spawn(SEQ_PUBLISHER, channel, "64", stdin=True)
    pub.wait_for("READY")
    subs = [Subscriber(channel, serialization="raw") for _ in range(16)]
    count = 300
    try:
        async def collect(sub: Subscriber) -> list[int]:
            seen = []
            async for payload in sub:
                seq = SEQ.unpack(payload)[0]
                if seq < 0:
                    return seen
                seen.append(seq)
            raise AssertionError("closed early")

        async def main() -> list[list[int]]:
            tasks = asyncio.gather(*(collect(s) for s in subs))
            await asyncio.sleep(0)  # every task is waiting before the first message
            pub.tell(f"paced {count}")
            pub.tell("end")
            return await tasks

        results = run(main())
        assert all(seen == list(range(count)) for seen in results)
        pub.tell("stats")
        assert pub.wait_for("STATS") == "STATS 0"
    finally:
        for sub in subs:
            sub.close()


# --------------------------------------------------------------------------- accounting


def test_hundred_thousand_messages_through_async_for(channel: str, spawn: Spawn) -> None:
    pub = spawn(SEQ_PUBLISHER, channel, "1024", stdin=True)
    pub.wait_for("READY")
    count = 100_000
    with Subscriber(channel, serialization="raw") as sub:

        async def main() -> tuple[int, int]:
            received, expect = 0, 0
            pub.tell(f"paced {count}")
            pub.tell("end")
            async for payload in sub:
                seq = SEQ.unpack(payload)[0]
                if seq < 0:
                    break
                assert seq == expect, (seq, expect)
                expect += 1
                received += 1
            return received, expect

        received, last = run(main(), timeout=120)
        assert received == last == count
        stats = sub.stats()
        assert (stats["received"], stats["dropped"]) == (count + 1, 0)
        pub.tell("stats")
        assert pub.wait_for("STATS") == "STATS 0"


def test_cancellation_in_the_middle_of_a_burst(channel: str, spawn: Spawn) -> None:
    """Awaits cancelled and timed out at random points of a burst lose nothing: every
    message is received exactly once or counted as dropped."""
    pub = spawn(SEQ_PUBLISHER, channel, "64", stdin=True)
    pub.wait_for("READY")
    rng = random.Random(15)
    bursts, size = 200, 100
    count = bursts * size
    with Subscriber(channel, serialization="raw") as sub:

        async def main() -> tuple[list[int], int]:
            seen: list[int] = []
            cancelled = 0
            pub.tell(f"bursts {bursts} {size}")
            pub.tell("end")
            while True:
                task = asyncio.ensure_future(sub.recv_bytes_async())
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
                if rng.random() < 0.5 and not task.done():
                    task.cancel()
                try:
                    payload = await asyncio.wait_for(task, rng.choice([1e-5, 1e-4, 1e-3, 5]))
                except (asyncio.CancelledError, asyncio.TimeoutError):
                    cancelled += 1
                    continue
                assert payload is not None
                seq = SEQ.unpack(payload)[0]
                if seq < 0:
                    return seen, cancelled
                seen.append(seq)

        seen, cancelled = run(main(), timeout=120)
        assert cancelled > 10, cancelled
        assert seen == sorted(set(seen)), "a message was received twice or out of order"
        stats = sub.stats()
        gaps = sum(b - a - 1 for a, b in zip([-1, *seen], seen, strict=False)) + (
            count - 1 - seen[-1])
        assert stats["dropped"] == gaps
        assert len(seen) + stats["dropped"] == count
        pub.tell("stats")
        assert pub.wait_for("STATS") == f"STATS {stats['dropped']}"


# --------------------------------------------------------------------------- fileno


def test_fileno_with_selectors(channel: str) -> None:
    with Publisher(channel) as pub, Subscriber(channel) as sub, \
            selectors.DefaultSelector() as sel:
        fd = sub.fileno()
        assert fd == sub.fileno()  # one descriptor for the subscriber's life
        sel.register(fd, selectors.EVENT_READ)
        assert sel.select(0.05) == []  # nothing waiting: not readable
        pub.send("a")
        assert len(sel.select(5)) == 1
        assert len(sel.select(0)) == 1  # level-triggered: still readable
        assert sub.recv(timeout=0) == "a"
        assert sub.recv(timeout=0) is None  # finds nothing: re-armed
        assert sel.select(0.05) == []
        for i in range(3):
            pub.send(i)
        assert len(sel.select(5)) == 1
        assert sub.recv(timeout=0) == 0
        assert len(sel.select(0)) == 1  # two more are waiting
        assert sub.recv_batch() == [1, 2]
        assert sub.recv_batch() == []  # an empty batch re-arms too
        assert sel.select(0.05) == []
        # A blocking receive in between leaves it readable (nothing is known); receiving
        # nothing re-arms it.
        pub.send("b")
        assert sub.recv(timeout=5) == "b"
        assert sub.recv(timeout=0.01) is None
        assert sub.recv(timeout=0) is None
        assert sel.select(0.05) == []
        pub.send("c")
        assert len(sel.select(5)) == 1
        sel.unregister(fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the subscriber


def test_fileno_with_loop_add_reader(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, "{}", stdin=True)
    pub.wait_for("READY")
    with Subscriber(channel) as sub:

        async def main() -> list[Any]:
            loop = asyncio.get_running_loop()
            got: list[Any] = []
            done = asyncio.Event()
            calls = 0

            def on_readable() -> None:
                nonlocal calls
                calls += 1
                while (msg := sub.recv(timeout=0)) is not None:
                    got.append(msg)
                if len(got) >= 20:
                    done.set()

            loop.add_reader(sub.fileno(), on_readable)
            try:
                for _ in range(4):
                    pub.tell("send 5")
                    pub.wait_for("SENT")
                await asyncio.wait_for(done.wait(), 10)
                calls_then = calls
                await asyncio.sleep(0.05)
                assert calls == calls_then, "readable with nothing waiting"
            finally:
                loop.remove_reader(sub.fileno())
            return got

        assert run(main()) == list(range(20))


def test_puller_fileno_and_recv_async(channel: str) -> None:
    with Pusher(channel) as push, Puller(channel) as pull, selectors.DefaultSelector() as sel:
        sel.register(pull.fileno(), selectors.EVENT_READ)
        push.send("x")
        assert sel.select(5)
        assert pull.recv(timeout=0) == "x"
        assert pull.recv(timeout=0) is None  # re-arms it
        sel.unregister(pull.fileno())

        async def main() -> list[Any]:
            async def produce() -> None:
                for i in range(3):
                    await asyncio.sleep(0.01)
                    push.send(i)

            task = asyncio.ensure_future(produce())
            got = [await pull.recv_async(timeout=10) for _ in range(3)]
            await task
            assert await pull.recv_async(timeout=0.05) is None
            return got

        assert run(main()) == [0, 1, 2]
        push.close()

        async def gone() -> None:
            with pytest.raises(SHMPeerGoneError):
                await pull.recv_async(timeout=5)

        run(gone())


REPLIER = r"""
import sys, time
from shm_comm import Replier
with Replier(sys.argv[1]) as rep:
    print("READY", flush=True)
    while True:
        req = rep.recv()
        if req == "slow":
            time.sleep(0.5)
        rep.send(("re", req))
        if req == "quit":
            break
"""


def test_request_async(channel: str, spawn: Spawn) -> None:
    rep = spawn(REPLIER, channel)
    rep.wait_for("READY")
    with Requester(channel) as req:

        async def main() -> None:
            assert await req.request_async(1) == ("re", 1)
            replies = [await req.request_async(i, timeout=5) for i in range(5)]
            assert replies == [("re", i) for i in range(5)]
            with pytest.raises(SHMTimeoutError):
                await req.request_async("slow", timeout=0.05)
            assert await req.request_async("next", timeout=5) == ("re", "next")
            assert req.stats()["given_up"] == 1  # the slow one's reply came late: dropped
            assert await req.request_async("quit", timeout=5) == ("re", "quit")

        run(main())
    rep.exit_ok()


# --------------------------------------------------------------------------- crashes, closes


def test_killed_publisher_while_awaiting(channel: str, spawn: Spawn) -> None:
    """Same reconnect behaviour as recv: the await does not hang on a dead publisher, and a
    restarted publisher (which retires the old segment) wakes it at once."""
    pub = spawn(CONTROLLED_PUBLISHER, channel, '{"num_slots": 8}', stdin=True)
    pub.wait_for("READY")
    new_pub: Publisher | None = None
    try:
        with Subscriber(channel) as sub:

            async def main() -> Any:
                nonlocal new_pub
                pub.tell("send 2")
                assert [await sub.recv_async(timeout=10) for _ in range(2)] == [0, 1]
                waiting = asyncio.ensure_future(sub.recv_async())
                await asyncio.sleep(0.05)
                pub.kill()
                pub.wait(timeout=10)
                await asyncio.sleep(0.05)
                assert not waiting.done()
                new_pub = Publisher(channel, num_slots=8)  # reclaims and retires the old one
                new_pub.send("again")
                started = time.monotonic()
                got = await asyncio.wait_for(waiting, 5)
                assert time.monotonic() - started < 5  # well within the 10 s slice
                return got

            assert run(main()) == "again"
            stats = sub.stats()
            assert (stats["reconnects"], stats["received"], stats["publisher_alive"]) == (
                1, 3, True)
    finally:
        if new_pub is not None:
            new_pub.close()
        else:
            force_unlink(channel)


def test_dead_publisher_times_out_then_reconnects(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, "{}", stdin=True)
    pub.wait_for("READY")
    with Subscriber(channel) as sub:
        pub.kill()
        pub.wait(timeout=10)
        assert poll_until(lambda: not sub.publisher_alive, timeout=5)

        async def main() -> Any:
            started = time.monotonic()
            assert await sub.recv_async(timeout=0.3) is None
            assert time.monotonic() - started < 3
            waiting = asyncio.ensure_future(sub.recv_async(timeout=10))
            await asyncio.sleep(0.05)
            with Publisher(channel) as again:
                again.send("back")
                return await waiting

        assert run(main()) == "back"
        assert sub.stats()["reconnects"] == 1


def test_close_ends_the_await_in_the_same_loop_and_from_a_thread(channel: str) -> None:
    fds = open_fds()
    with Publisher(channel) as pub:
        for closer in ("task", "thread"):
            sub = Subscriber(channel)

            async def main(sub: Subscriber = sub, closer: str = closer) -> list[Any]:
                got: list[Any] = []

                async def close_later() -> None:
                    while not sub._ready or not sub._ready.armed:
                        await asyncio.sleep(0.001)
                    if closer == "task":
                        sub.close()
                    else:
                        thread = threading.Thread(target=sub.close)
                        thread.start()
                        thread.join()

                pub.send("first")
                closing = asyncio.ensure_future(close_later())
                async for msg in sub:
                    got.append(msg)
                await closing
                assert await _closed_recv(sub) is None
                return got

            assert run(main(), timeout=10) == ["first"]
            assert sub.closed
    assert poll_until(lambda: open_fds() <= fds, timeout=5), "descriptors left open"


def test_recv_async_raises_when_closed_while_it_waits(channel: str) -> None:
    with Publisher(channel):
        for how in ("close from a thread", "segment released (garbage collection, exit)"):
            sub = Subscriber(channel)

            async def main(sub: Subscriber = sub, how: str = how) -> None:
                waiting = asyncio.ensure_future(sub.recv_async())
                while not sub._ready or not sub._ready.armed:
                    await asyncio.sleep(0.001)
                if how.startswith("close"):
                    threading.Thread(target=sub.close).start()
                else:
                    # The segment's finalizer alone: the notifier's pin keeps the mapping,
                    # and the release wakes the watch (the doorbell is bumped).
                    sub._finalizer()
                with pytest.raises(SHMClosedError):
                    await asyncio.wait_for(waiting, 5)

            run(main(), timeout=10)
            sub.close()


async def _closed_recv(sub: Subscriber) -> Any:
    try:
        return await sub.recv_async()
    except ValueError:
        return None


def test_array_subscriber_async(channel: str) -> None:
    with ArrayPublisher(channel, dtype=np.int64, shape=(4,)) as pub, \
            ArraySubscriber(channel) as sub:

        async def main() -> None:
            async def produce() -> None:
                for i in range(6):
                    await asyncio.sleep(0.005)
                    pub.send(np.full(4, i))

            task = asyncio.ensure_future(produce())
            view = await sub.recv_async(timeout=5)
            assert view is not None
            assert not view.flags.writeable
            assert view.tolist() == [0] * 4
            copy = await sub.recv_async(timeout=5, copy=True)
            assert copy is not None
            assert copy.flags.writeable
            assert copy.tolist() == [1] * 4
            seen = []
            async for arr in sub:
                seen.append(int(arr[0]))
                if seen[-1] == 3:
                    break
            await task
            batch = await sub.recv_batch_async(timeout=5)
            assert batch.shape == (2, 4)
            assert batch[:, 0].tolist() == [4, 5]
            empty = await sub.recv_batch_async(timeout=0.01)
            assert empty.shape == (0, 4)

        run(main())


def test_observer_async(channel: str) -> None:
    with Publisher(channel) as pub, Subscriber(channel, observer=True) as obs:

        async def main() -> Any:
            waiting = asyncio.ensure_future(obs.recv_async(timeout=5))
            await asyncio.sleep(0.01)
            pub.send("seen")
            return await waiting

        assert run(main()) == "seen"
        assert pub.stats()["subscribers"] == 0


# --------------------------------------------------------------------------- the notifier


def test_notifier_serves_more_than_one_futex_waitv_call(channel: str) -> None:
    """300 watches armed at once on words of one buffer need three threads (127 each) in the
    default mode; each fires exactly when its word changes."""
    if not has_futex:
        pytest.skip("no futexes here")
    import mmap

    memory = mmap.mmap(-1, 8 * 300)
    atom = AtomicBuffer(memory)
    readies = [notify.Readiness() for _ in range(300)]
    try:
        for i, ready in enumerate(readies):
            assert ready.arm(atom, 8 * i, 0)
        kind = notify.notifier_kind()
        for i in rng_order(300):
            atom.store(8 * i, 1)
            atom.wake(8 * i)
            assert poll_until(lambda i=i: readies[i].fired == 1, timeout=5)
            with selectors.DefaultSelector() as sel:
                sel.register(readies[i].fileno(), selectors.EVENT_READ)
                assert sel.select(5)
        if kind == "waitv":
            assert notify._notifier().threads >= 3
    finally:
        for ready in readies:
            ready.close()
        atom.release()
        memory.close()


def test_rearming_on_the_same_word_needs_no_wake_up_of_the_thread() -> None:
    """A watch that fired keeps its word in its thread's futex_waitv set, so arming it again
    on that word needs no kick; every change after arming still fires it, also when the
    word changed between the firing and the new arm."""
    if notify.notifier_kind() != "waitv":
        pytest.skip("only futex_waitv threads keep fired words")
    import mmap

    memory = mmap.mmap(-1, 64)
    atom = AtomicBuffer(memory)
    ready = notify.Readiness()
    notifier = notify._notifier()
    try:
        def change(value: int) -> None:
            atom.store(0, value)
            atom.wake(0)

        def fires(count: int) -> None:
            assert poll_until(lambda: ready.fired == count, timeout=5), ready.fired

        assert ready.arm(atom, 0, 0)
        change(1)
        fires(1)
        current = 1
        for round_ in range(1, 20):
            saved = notifier.kicks_saved
            if round_ % 5 == 0:  # changed while fired: the arm reads the new value
                current += 100
                change(current)
            assert ready.arm(atom, 0, current)
            current += 1
            change(current)
            fires(1 + round_)
            assert not ready.armed
            if round_ % 5:
                assert notifier.kicks_saved > saved  # its thread still slept on the word
        assert not ready.arm(atom, 0, 0), "a stale value must not arm"
    finally:
        ready.close()
        atom.release()
        memory.close()


def rng_order(n: int) -> list[int]:
    order = list(range(n))
    random.Random(n).shuffle(order)
    return order


NOTIFIER_MODE_SCRIPT = r"""
import asyncio, sys
from shm_comm import Publisher, Subscriber, notify
with Publisher(sys.argv[1]) as pub, Subscriber(sys.argv[1]) as sub:
    async def main():
        async def produce():
            for i in range(5):
                await asyncio.sleep(0.01)
                pub.send(i)
        task = asyncio.ensure_future(produce())
        got = [await sub.recv_async(timeout=5) for _ in range(5)]
        await task
        assert await sub.recv_async(timeout=0.05) is None
        return got
    print(notify.notifier_kind(), asyncio.run(main()), flush=True)
"""


@pytest.mark.parametrize("kind", ["single", "poll"])
def test_fallback_notifiers(channel: str, kind: str) -> None:
    if kind == "single" and not has_futex:
        pytest.skip("no futexes here")
    proc = subprocess.run([sys.executable, "-c", NOTIFIER_MODE_SCRIPT, channel],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SHM_COMM_NOTIFIER=kind))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{kind} [0, 1, 2, 3, 4]"


FORK_SCRIPT = r"""
import asyncio, functools, os, sys
from shm_comm import Publisher, Subscriber
ch = sys.argv[1]
with Publisher(ch) as pub, Subscriber(ch) as sub:
    pub.send("parent")
    assert asyncio.run(sub.recv_async(timeout=5)) == "parent"  # the notifier runs now
    child = os.fork()
    if child == 0:
        with Subscriber(ch) as mine:
            async def main():
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, functools.partial(print, "CHILD WAITING", flush=True))
                return await mine.recv_async(timeout=10)
            print("CHILD", asyncio.run(main()), flush=True)
        os._exit(0)
    sys.stdin.readline()
    pub.send("to child")
    _, status = os.waitpid(child, 0)
    print("PARENT", asyncio.run(sub.recv_async(timeout=5)), status, flush=True)
"""


def test_async_after_fork(channel: str, spawn: Spawn) -> None:
    """A fork()ed child gets its own notifier (the parent's threads are not there)."""
    proc = spawn(FORK_SCRIPT, channel, stdin=True)
    proc.wait_for("CHILD WAITING")
    proc.tell("go")
    assert proc.wait_for("CHILD") == "CHILD to child"
    assert proc.wait_for("PARENT") == "PARENT to child 0"
    proc.exit_ok()


def test_example_two_channels_in_one_loop() -> None:
    """examples/async_subscriber.py starts the simulator, follows two channels with
    asyncio.gather and ends both loops by closing the subscribers."""
    shm_dir = tempfile.mkdtemp(prefix="shmc-async-", dir="/dev/shm")
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "async_subscriber.py"), "--seconds", "1"],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, SHM_COMM_DIR=shm_dir))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "received {'joints': " in proc.stdout
        assert not os.listdir(shm_dir), "segments left behind"
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
