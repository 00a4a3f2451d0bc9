"""A work queue: one pusher hands tasks to three worker processes, results come back by request.

    python examples/work_queue.py

The main process pushes tasks into a push/pull queue; three workers compete for them, so each
task is done by exactly one worker. Workers send each result back to the main process as a
request on a request/reply channel (any number of requesters may share one replier), and the
main process acknowledges it. When every task is taken, the pusher closes the queue; each
worker sees that (``SHMPeerGoneError``) once the queue is empty and exits. Everything stops by
itself and leaves nothing in /dev/shm.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
from collections import Counter
from typing import Any

from shm_comm.errors import SHMPeerGoneError
from shm_comm.pipeline import Puller, Pusher
from shm_comm.reqrep import Replier, Requester

NUM_TASKS = 200
NUM_WORKERS = 3


def worker(number: int, tasks: str, results: str, attached: Any) -> None:
    """Take tasks until the queue is closed and empty; report each result."""
    done = 0
    with Puller(tasks, timeout_connect=30) as puller, \
            Requester(results, timeout_connect=30) as reporter:
        attached.release()
        while True:
            try:
                task = puller.recv(timeout=10)
            except SHMPeerGoneError:
                break  # the pusher closed the queue and every task has been taken
            if task is None:
                print(f"[worker {number}] no task for 10 s, giving up", flush=True)
                break
            value = sum(i * i for i in range(task))
            reporter.request((number, task, value, puller.last_redelivered), timeout=10)
            done += 1
    print(f"[worker {number}] did {done} tasks", flush=True)


def push_tasks(pusher: Pusher) -> None:
    """Push every task (waiting whenever the queue is full), then close the queue."""
    for task in range(NUM_TASKS):
        pusher.send(task, timeout=30)
    pusher.join(timeout=30)
    stats = pusher.stats()
    print(f"[pusher] {stats['sent']} tasks sent, {stats['taken']} taken, "
          f"{stats['full']} sends waited for room", flush=True)
    pusher.close()


def main() -> int:
    """Run the workers, push the tasks, collect the results; non-zero on any mismatch."""
    # Unique per run; passed to the workers (spawned children re-import this module).
    tasks, results_channel = f"tasks_example_{os.getpid()}", f"results_example_{os.getpid()}"
    ctx = mp.get_context("spawn")
    attached = ctx.Semaphore(0)
    with Replier(results_channel, num_slots=16, slot_size=256) as collector, \
            Pusher(tasks, num_slots=32, slot_size=256) as pusher:
        workers = [ctx.Process(target=worker, args=(n, tasks, results_channel, attached))
                   for n in range(NUM_WORKERS)]
        for proc in workers:
            proc.start()
        # Start once every worker is attached, so that all of them compete from the start
        # (and none arrives after the queue was closed).
        for _ in workers:
            if not attached.acquire(timeout=60):
                print("[main] a worker did not start", file=sys.stderr)
                return 1
        # The pusher has its own thread; this one collects results. Each object is used by
        # one thread only.
        pushing = threading.Thread(target=push_tasks, args=(pusher,))
        pushing.start()
        per_worker: Counter[int] = Counter()
        results: dict[int, int] = {}
        while len(results) < NUM_TASKS:
            report = collector.recv(timeout=30)
            if report is None:
                print("[main] no result for 30 s", file=sys.stderr)
                break
            number, task, value, _redelivered = report
            assert task not in results, f"task {task} done twice"
            results[task] = value
            per_worker[number] += 1
            collector.send("ok")
        pushing.join()
        for proc in workers:
            proc.join(30)
    correct = all(results.get(t) == sum(i * i for i in range(t)) for t in range(NUM_TASKS))
    print(f"[main] {len(results)} results, all correct: {correct}; "
          f"per worker: {dict(sorted(per_worker.items()))}", flush=True)
    ok = correct and all(proc.exitcode == 0 for proc in workers)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
