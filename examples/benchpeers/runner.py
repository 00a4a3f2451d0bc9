"""Runs one workload for one peer in separate ``spawn``-ed processes, with a hard timeout.

The parent creates the channels and synchronisation objects, starts one child per role,
collects each child's result through its own pipe and kills children that exceed the task's
timeout. A child failure becomes an error string in the result (reported in the table cell),
never an exception in the parent.

Children redirect their stdout/stderr to a per-task log file so that library chatter (zenoh,
iceoryx2) never mixes with the Markdown table on stdout.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from .base import Peer
from .workloads import WORKLOADS, part_workload


@dataclass
class Task:
    """One (workload, peer, parameters) combination."""

    key: str
    peer: str
    workload: str
    params: dict[str, Any]
    timeout: float


@dataclass
class TaskResult:
    """Outcome of a task: per-role results, or an error description."""

    task: Task
    ok: bool
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    #: For combined tasks that failed part-way: role -> results of the completed parts.
    partial: dict[str, dict[str, Any]] = field(default_factory=dict)


def _child_main(
    peer_cls: type[Peer],
    workload: str,
    role: str,
    specs: dict[str, Any],
    params: dict[str, Any],
    sync: dict[str, Any],
    run_dir: str,
    log_path: str,
    conn: Connection,
) -> None:
    """Entry point of every child process."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    peer = peer_cls()
    hints: list[Any] = []

    def report_part(part: str, result: dict[str, Any]) -> None:
        """Send a finished part of a combined task at once (survives a later kill)."""
        conn.send({"part": part, "result": result})

    try:
        peer.attach(role, run_dir, params["tag"])
        try:
            local_sync = dict(sync, report_part=report_part)
            result = WORKLOADS[workload].roles[role](peer, specs, params, local_sync)
        finally:
            hints = peer.detach()
        conn.send({"ok": True, "result": result, "hints": hints})
    except BaseException as exc:
        tb = traceback.format_exc()
        print(tb, flush=True)
        try:
            sync["barrier"].abort()  # release the other process if it waits on us
        except Exception:
            pass
        combo = getattr(exc, "partial", None) is not None  # workloads.PartialFailure
        msg = str(exc) if combo else f"{type(exc).__name__}: {exc}"
        conn.send({"ok": False, "error": msg, "hints": hints})
    finally:
        conn.close()


@dataclass
class _Running:
    """Processes of a started task."""

    task: Task
    t0: float
    deadline: float
    procs: dict[str, Any]
    pending: dict[Connection, str]
    conns: list[Connection]
    keep_alive: tuple[Any, ...]  # specs and sync objects must outlive the children's start
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    partial: dict[str, dict[str, Any]] = field(default_factory=dict)


class Runner:
    """Spawns and supervises the processes of each task; keeps cleanup hints per peer."""

    def __init__(self, run_dir: str, peers: dict[str, Peer]) -> None:
        self.ctx = mp.get_context("spawn")
        self.run_dir = run_dir
        self.log_dir = os.path.join(run_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.peers = peers
        self.hints: dict[str, list[Any]] = {name: [] for name in peers}
        self._started: set[str] = set()
        self._counter = 0

    def run(self, task: Task) -> TaskResult:
        """Run one task to completion or timeout."""
        return self.run_parallel([task])[0]

    def run_parallel(self, tasks: list[Task]) -> list[TaskResult]:
        """Run several tasks at the same time (used for the idle-CPU workload only)."""
        started: list[_Running | TaskResult] = [self._start(t) for t in tasks]
        running = [r for r in started if isinstance(r, _Running)]
        self._collect(running)
        return [r if isinstance(r, TaskResult) else self._finish(r) for r in started]

    def _start(self, task: Task) -> _Running | TaskResult:
        t0 = time.monotonic()
        peer = self.peers[task.peer]
        if task.peer not in self._started:
            peer.begin_run(self.run_dir)
            self._started.add(task.peer)
        self._counter += 1
        tag = f"t{self._counter}"
        params = dict(task.params, tag=tag)
        wl = WORKLOADS[task.workload]
        try:
            specs = wl.channels(peer, self.ctx, params)
        except Exception as exc:
            return TaskResult(task, False, error=f"setup: {type(exc).__name__}: {exc}")
        roles = list(wl.roles)
        sync = {
            "barrier": self.ctx.Barrier(len(roles)),
            "ack": self.ctx.Event(),
            "finished": self.ctx.Event(),
            "ready": self.ctx.Event(),
            "credits": self.ctx.Semaphore(0),
            "credits2": self.ctx.Semaphore(0),
        }
        procs: dict[str, Any] = {}
        pending: dict[Connection, str] = {}
        safe = task.key.replace("/", "_").replace(" ", "_")
        for role in roles:
            r, w = self.ctx.Pipe(duplex=False)
            log_path = os.path.join(self.log_dir, f"{tag}-{safe}-{role}.log")
            proc = self.ctx.Process(
                target=_child_main,
                args=(
                    type(peer),
                    task.workload,
                    role,
                    specs,
                    params,
                    sync,
                    self.run_dir,
                    log_path,
                    w,
                ),
                name=f"bench-{tag}-{role}",
                daemon=True,
            )
            proc.start()
            w.close()
            procs[role] = proc
            pending[r] = role
        return _Running(task, t0, t0 + task.timeout, procs, pending, list(pending), (specs, sync))

    def _collect(self, running: list[_Running]) -> None:
        """Wait for results until each task is complete, failed or past its deadline.

        After a first error the partner processes get one more second to report (their own
        error is usually the real cause, the other side only sees a broken barrier).
        """
        active = [r for r in running if r.pending]
        while active:
            now = time.monotonic()
            for r in active:
                if now >= r.deadline:
                    if not r.errors:
                        r.errors.append(f"timeout after {r.task.timeout:.0f} s")
                    r.pending.clear()
            active = [r for r in active if r.pending]
            if not active:
                break
            owner = {c: r for r in active for c in r.pending}
            timeout = max(0.0, min(r.deadline for r in active) - time.monotonic())
            for ready in wait(list(owner), timeout=timeout):
                c = cast(Connection, ready)
                r = owner[c]
                role = r.pending[c]
                try:
                    msg = c.recv()
                except EOFError:
                    msg = {"ok": False, "error": f"died (exit code {r.procs[role].exitcode})"}
                if "part" in msg:  # intermediate result of a combined task
                    r.partial.setdefault(role, {})[msg["part"]] = msg["result"]
                    continue
                del r.pending[c]
                self.hints[r.task.peer].extend(msg.get("hints") or [])
                if msg["ok"]:
                    r.results[role] = msg["result"]
                else:
                    r.errors.append(f"{role}: {msg['error']}")
                    r.deadline = min(r.deadline, time.monotonic() + 1.0)
            active = [r for r in active if r.pending]

    def _finish(self, r: _Running) -> TaskResult:
        for proc in r.procs.values():
            proc.join(timeout=max(0.1, min(5.0, r.deadline - time.monotonic())))
        peer = self.peers[r.task.peer]
        for proc in r.procs.values():
            if proc.is_alive():
                try:
                    self.hints[r.task.peer].extend(peer.hints_from_pid(proc.pid))
                except Exception:
                    pass
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        for c in r.conns:
            c.close()
        ok = not r.errors and len(r.results) == len(r.procs)
        err = "; ".join(_primary_errors(r.errors))
        return TaskResult(r.task, ok, r.results, err, time.monotonic() - r.t0, r.partial)

    def cleanup(self) -> list[str]:
        """Ask every peer to remove what this run created (by exact name)."""
        removed: list[str] = []
        for name, peer in self.peers.items():
            if name in self._started:
                try:
                    removed += peer.cleanup(self.run_dir, self.hints[name])
                except Exception as exc:  # cleanup must never crash the report
                    removed.append(f"(cleanup of {name} failed: {exc!r})")
        return removed


def expand_combo(res: TaskResult) -> list[TaskResult]:
    """Split a combined task's result into one result per part (completed parts keep their
    data even when a later part failed)."""
    if res.task.workload != "combo":
        return [res]
    out = []
    failed = ""
    for part in res.task.params["parts"]:
        wl = part_workload(part)
        task = Task(
            f"{part}/{res.task.peer}", res.task.peer, wl, res.task.params[part], res.task.timeout
        )
        source = res.roles if res.ok else {**res.partial, **res.roles}
        roles = {role: v[part] for role, v in source.items() if part in v}
        if len(roles) == len(WORKLOADS[wl].roles):
            out.append(TaskResult(task, True, roles, "", res.seconds))
        elif not failed:
            failed = part
            out.append(TaskResult(task, False, {}, res.error or "failed", res.seconds))
        else:
            out.append(TaskResult(task, False, {}, f"not run ({failed} failed)", res.seconds))
    return out


def _primary_errors(errors: list[str]) -> list[str]:
    """Drop the secondary BrokenBarrierError of the partner when the real error is known."""
    primary = [e for e in errors if "BrokenBarrierError" not in e]
    return primary or errors
