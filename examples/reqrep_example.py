"""Request/reply between processes: a small calculator service and its clients.

    python examples/reqrep_example.py            # a replier and two requesters, in one run
    python examples/reqrep_example.py server     # terminal 1: serve until Ctrl-C
    python examples/reqrep_example.py client     # terminal 2: a few requests, then exit

Without a role it starts a "calculator" replier in one process and two client processes. Each
client sends requests and checks that every reply is its own. One client also shows a timeout:
it gives up on a slow request, and the late reply to it is dropped when it arrives, so the
client's next request still gets the right answer. Everything stops by itself and leaves
nothing in /dev/shm. The ``server``/``client`` roles are shm-comm 1.0's command line: start the
server first (the client waits up to 10 s for it).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from typing import Any

from shm_comm import Replier, Requester, SHMTimeoutError

REQUESTS_PER_CLIENT = 5


def replier(channel: str, ready: Any, stop: Any) -> None:
    """Answer ("add", a, b), ("mul", a, b) and ("slow", a) until told to stop."""
    with Replier(channel, num_slots=8, slot_size=1024) as rep:
        ready.set()
        while not stop.is_set():
            request = rep.recv(timeout=0.1)
            if request is None:
                continue
            op, *args = request
            if op == "slow":
                time.sleep(0.3)  # longer than the client is willing to wait
                rep.send(("slow", args[0]))
            elif op == "add":
                rep.send(args[0] + args[1])
            else:
                rep.send(args[0] * args[1])
        stats = rep.stats()
        print(f"[replier] {stats['requests']} requests, {stats['replies']} replies, "
              f"{stats['requesters']} requesters still attached", flush=True)


def client(channel: str, number: int) -> None:
    """Send a few requests and check each reply."""
    with Requester(channel, timeout_connect=30) as req:
        if number == 2:
            try:
                req.request(("slow", number), timeout=0.1)
            except SHMTimeoutError:
                print("[client 2] gave up on a slow request after 0.1 s", flush=True)
        for i in range(REQUESTS_PER_CLIENT):
            op = "add" if i % 2 else "mul"
            reply = req.request((op, number * 100, i), timeout=5)
            expected = number * 100 + i if op == "add" else number * 100 * i
            assert reply == expected, (reply, expected)
            print(f"[client {number}] {op}({number * 100}, {i}) = {reply}", flush=True)
        stats = req.stats()
        print(f"[client {number}] {stats['received']} replies, "
              f"{stats['given_up']} request given up (its late reply dropped)", flush=True)


def serve(channel: str) -> None:
    """The ``server`` role: answer ("add", a, b) and ("mul", a, b) until Ctrl-C."""
    with Replier(channel, num_slots=8, slot_size=1024) as rep:
        print(f"calculator serving on {channel!r} (Ctrl-C stops)", flush=True)
        served = 0
        try:
            while True:
                request = rep.recv(timeout=5.0)
                if request is None:
                    print("(no request for 5 s)", flush=True)
                    continue
                op, a, b = request
                answer = a + b if op == "add" else a * b
                rep.send(answer)
                served += 1
                print(f"{op}({a}, {b}) -> {answer}", flush=True)
        except KeyboardInterrupt:
            print(f"served {served} requests", flush=True)


def ask(channel: str) -> int:
    """The ``client`` role: a few requests to a running server; non-zero if one failed."""
    with Requester(channel, timeout_connect=10.0) as req:
        for op, a, b in (("add", 2, 3), ("mul", 6, 7), ("add", 0.5, 0.25)):
            try:
                reply = req.request((op, a, b), timeout=3.0)
            except SHMTimeoutError as exc:
                print(f"no reply: {exc}", flush=True)
                return 1
            print(f"{op}({a}, {b}) = {reply}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the whole demo, or one role; non-zero if anything failed."""
    parser = argparse.ArgumentParser(
        description="Request/reply between processes: a calculator service and its clients.",
        epilog="Without a role, runs a replier and two requesters in one go.")
    parser.add_argument("role", nargs="?", choices=("server", "client"),
                        help="run one side: the server until Ctrl-C, or a client")
    parser.add_argument("--channel", default="example_calculator",
                        help="channel of the server/client roles (default example_calculator)")
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.channel)
        return 0
    if args.role == "client":
        return ask(args.channel)
    return demo()


def demo() -> int:
    """Run the replier and both clients; non-zero if any of them failed."""
    channel = f"calc_example_{os.getpid()}"  # unique per run (spawned children re-import us)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=replier, args=(channel, ready, stop))
    server.start()
    if not ready.wait(30):
        server.terminate()
        print("the replier did not start", file=sys.stderr)
        return 1
    clients = [ctx.Process(target=client, args=(channel, n)) for n in (1, 2)]
    for proc in clients:
        proc.start()
    for proc in clients:
        proc.join(60)
    stop.set()
    server.join(30)
    codes = [proc.exitcode for proc in (*clients, server)]
    return 0 if codes == [0, 0, 0] else 1


if __name__ == "__main__":
    sys.exit(main())
