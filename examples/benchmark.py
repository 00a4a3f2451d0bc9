#!/usr/bin/env python3
"""Benchmark shm_comm against other Python IPC mechanisms, all in ONE run.

Usage::

    python examples/benchmark.py                 # shm_comm workloads only
    python examples/benchmark.py --quick --peers # + every installed peer, fewer iterations
    python examples/benchmark.py --peers --json results.json --plot docs/benchmark.png
    python examples/benchmark.py --only latency,stream --iterations 2000

Peers (``--peers``): multiprocessing.Queue, multiprocessing.Pipe, pyzmq (PUB/SUB over
``ipc://``), faster-fifo, iceoryx2 and Eclipse Zenoh, each used the way its documentation
recommends (see ``examples/benchpeers/peer_*.py``). A peer whose package is missing is skipped
with a line saying so.

Every workload runs producer and consumer in separate ``spawn``-ed processes with a timeout; a
failing peer shows up as ``FAIL: ...`` in its cell. Machines with few cores are noisy: compare
the columns of one run with each other, not numbers across runs. Rows say whether the receiver
blocks in the OS or busy-polls (busy-polling burns a whole core; on a 2-core machine two
spinning processes compete with everything else).

Output: a Markdown table on stdout, a progress bar on stderr, optionally ``--json`` (raw
samples, metrics, machine description) and ``--plot`` (matplotlib PNG).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
try:  # prefer the installed package; fall back to the repository checkout
    import shm_comm  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(1, os.path.dirname(HERE))

from benchpeers import ALL_CLASSES, PEER_CLASSES, SUBJECT, Peer  # noqa: E402
from benchpeers.report import (  # noqa: E402
    alias_main_array_metrics,
    build_table,
    comparison_rows,
    derive,
    extract,
    group_of,
    plot,
    shm_comm_table,
)
from benchpeers.runner import Runner, Task, TaskResult, expand_combo  # noqa: E402
from benchpeers.workloads import FRAME_1080P, KIB, MIB  # noqa: E402

WORKLOAD_CHOICES = (
    "latency", "stream", "arrays", "first", "idle", "wakeup", "typed", "batch", "loan"
)
LAT_SIZES = [64, 4 * KIB]
ARRAY_SIZES = [1 * MIB, 16 * MIB]
FIRST_SIZES = [FRAME_1080P, 16 * MIB]
MICRO_SIZES = [1 * KIB, 1 * MIB, 16 * MIB]
TYPED_PEER = "shm_comm[typed]"
# The asyncio reference for the awaiting wake-up row: a pipe awaited with loop.add_reader
# costs what any descriptor written by another process costs an asyncio loop.
ASYNC_REFERENCE = "mp.Pipe"


def settings(quick: bool, iterations: int | None) -> dict[str, dict[str, Any]]:
    """Per-workload parameters; ``--quick`` shrinks the sample counts, not the semantics."""
    s: dict[str, dict[str, Any]] = {
        "pingpong": {"warmup": 200, "iterations": 5000, "max_seconds": 10.0},
        "stream": {"size": 64, "count": 200_000, "seconds": 5.0, "drain_seconds": 20.0},
        "arrays": {"warm": 8, "lat_small": 100, "thr_small": 300, "lat_big": 20, "thr_big": 50},
        "wake": {"count": 500, "gap": 0.003, "idle_seconds": 2.0},
        "batch": {"n": 1000, "rounds": 30, "slots": 2048},
        "bstream": {"size": 64, "count": 2_000_000, "batch": 1000, "slots": 16384},
        "micro": {"reps_small": 2000, "reps_big": 40},
        "first": {"count": 24},
        "blocksend": {"chunks": 20, "chunk": 500},
    }
    if quick:
        s["pingpong"].update(warmup=50, iterations=300, max_seconds=0.5)
        s["stream"].update(count=20_000, seconds=1.5, drain_seconds=10.0)
        s["arrays"].update(warm=4, lat_small=10, thr_small=30, lat_big=3, thr_big=6)
        s["wake"].update(count=80)
        s["batch"].update(rounds=5)
        s["bstream"].update(count=300_000)
        s["micro"].update(reps_small=200, reps_big=8)
        s["first"].update(count=16)
        s["blocksend"].update(chunks=6, chunk=200)
    if iterations:
        s["pingpong"]["iterations"] = iterations
        s["wake"]["count"] = max(10, iterations // 10)
    return s


def plan(
    peers: dict[str, Peer],
    names: list[str],
    only: set[str],
    cfg: dict[str, dict[str, Any]],
    quick: bool,
) -> tuple[list[Task], list[Task]]:
    """Tasks for this run: (sequential tasks, idle-CPU tasks run side by side at the end).

    The idle subscribers only sleep in the kernel, so running them at the same time does not
    change the CPU time each of them uses; it saves ~2.5 s per peer.
    """
    tmo = 45.0 if quick else 120.0
    seq: list[Task] = []
    idle: list[Task] = []
    wake = dict(cfg["wake"], idle_seconds=0.0)
    quiet = dict(cfg["wake"], count=0)
    for name in names:
        peer = peers[name]
        subject = name == SUBJECT
        modes = ["block", "spin"] if peer.supports_spin else ["block"]
        # Workloads that fit in one pair of processes share it (a spawn costs ~1 s here).
        combo: dict[str, Any] = {"parts": []}

        def part(key: str, params: dict[str, Any], combo: dict[str, Any] = combo) -> None:
            combo["parts"].append(key)
            combo[key] = params

        if "latency" in only or (subject and "typed" in only):
            sizes = LAT_SIZES if "latency" in only else []
            if subject and "typed" in only:
                sizes = [*sizes, 48]  # raw send_bytes reference for the typed row
            part("pingpong", dict(cfg["pingpong"], sizes=sizes, modes=modes))
        if "stream" in only:
            part("stream", dict(cfg["stream"]))
            if subject:  # lossless variant: the publisher waits for room
                part("stream@block", dict(cfg["stream"], block_send=True))
        if "wakeup" in only:
            part("wake", dict(wake, mode="block"))
            if peer.supports_async:  # awaiting in asyncio, right after the blocking row
                part("wake@async", dict(wake, mode="async"))  # (same processes)
        if subject:
            # busy-poll contrast; the spinning idle phase only in full runs (2 s)
            spin = dict(cfg["wake"], mode="spin")
            spin["count"] = spin["count"] if "wakeup" in only else 0
            spin["idle_seconds"] = 0.0 if quick or "idle" not in only else spin["idle_seconds"]
            if spin["count"] or spin["idle_seconds"]:
                part("wake@spin", spin)
            if "batch" in only:
                part("batch", dict(cfg["batch"]))
            if "stream" in only:
                part("bstream", dict(cfg["bstream"]))
            if "latency" in only:
                part("blocksend", dict(cfg["blocksend"]))
            if "loan" in only:
                part("micro", dict(cfg["micro"], sizes=MICRO_SIZES))
        if combo["parts"]:
            label = "+".join(combo["parts"])
            seq.append(Task(f"{label}/{name}", name, "combo", combo, tmo * len(combo["parts"])))
        if "arrays" in only:
            params = dict(cfg["arrays"], sizes=ARRAY_SIZES, variants=list(peer.array_variants))
            seq.append(Task(f"arrays/{name}", name, "arrays", params, tmo * 2))
        if "first" in only:  # fresh processes: nothing of the channel's memory is warm yet
            params = dict(cfg["first"], sizes=FIRST_SIZES)
            seq.append(Task(f"first/{name}", name, "first", params, tmo * 2))
        if "idle" in only:
            idle.append(Task(f"idle/block/{name}", name, "idle", dict(quiet, mode="block"), tmo))
            if subject:
                idle.append(Task(f"idle/async/{name}", name, "idle", dict(quiet, mode="async"),
                                 tmo))
        if subject and "typed" in only:
            base = dict(cfg["pingpong"], sizes=[48], modes=["block"])
            seq.append(Task(f"typed/{TYPED_PEER}", TYPED_PEER, "pingpong", base, tmo))
    return seq, idle


def machine() -> dict[str, Any]:
    """Short description of the machine and package versions."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("shm-comm-streams", "numpy", "pyzmq", "faster-fifo", "iceoryx2", "eclipse-zenoh"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (< 1 min)")
    ap.add_argument("--peers", action="store_true", help="also run the peers")
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(WORKLOAD_CHOICES))
    ap.add_argument("--peer", default="", help="comma list restricting which peers run")
    ap.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="round trips per latency row (wake-up samples = iterations/10)",
    )
    ap.add_argument("--json", metavar="FILE", help="write raw results and metrics as JSON")
    ap.add_argument("--plot", metavar="FILE.png", help="write latency/throughput plots")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat everything N times (all peers once per round) and report medians",
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep child logs (run dir)")
    ap.add_argument(
        "--from-json",
        metavar="FILE",
        help="do not run anything: re-render the report (and --plot) of an earlier --json file",
    )
    args = ap.parse_args(argv)
    only = {w.strip() for w in args.only.split(",") if w.strip()} or set(WORKLOAD_CHOICES)
    bad = only - set(WORKLOAD_CHOICES)
    if bad:
        ap.error(f"unknown workload(s) {sorted(bad)}; choose from {WORKLOAD_CHOICES}")
    args.only_set = only
    return args


def run_tasks(
    runner: Runner, seq_tasks: list[Task], idle_tasks: list[Task], rounds: int
) -> list[tuple[int, TaskResult]]:
    """Run every round (all peers once per round, so slow phases of a noisy machine hit
    every column alike); returns (round, result) with combined tasks split into parts."""
    out: list[tuple[int, TaskResult]] = []
    try:
        from tqdm import tqdm

        total = rounds * (len(seq_tasks) + len(idle_tasks))
        bar: Any = tqdm(total=total, file=sys.stderr, unit="task", dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        bar = None
    try:
        for rnd in range(rounds):
            prefix = f"[{rnd + 1}/{rounds}] " if rounds > 1 else ""
            done: list[TaskResult] = []
            for task in seq_tasks:
                if bar is not None:
                    bar.set_description(prefix + task.key)
                done.append(runner.run(task))
                _progress(bar, done[-1:])
            if idle_tasks:
                if bar is not None:
                    bar.set_description(f"{prefix}idle x{len(idle_tasks)} (side by side)")
                batch = runner.run_parallel(idle_tasks)
                _progress(bar, batch)
                done += batch
            out += [(rnd, part) for res in done for part in expand_combo(res)]
    finally:
        if bar is not None:
            bar.close()
    return out


def compute_metrics(
    peers: list[str], results: list[tuple[int, TaskResult]], rounds: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]], list[Any]]:
    """Metrics per round, then the median over the rounds that produced each metric."""
    per_round: list[dict[str, dict[str, float]]] = [{n: {} for n in peers} for _ in range(rounds)]
    errors: dict[str, dict[str, str]] = {n: {} for n in peers}
    for rnd, res in results:
        if res.ok:
            try:
                per_round[rnd][res.task.peer].update(extract(res))
            except Exception as exc:  # a malformed result must not kill the report
                errors[res.task.peer][group_of(res)] = f"report: {exc!r}"
        else:
            errors[res.task.peer][group_of(res)] = res.error
    for m in per_round:
        typed = m.get(TYPED_PEER, {})
        if "lat.block.48.p50" in typed:
            m[SUBJECT]["lat.block.typed.p50"] = typed["lat.block.48.p50"]
        alias_main_array_metrics(m)
        reference = m.get(ASYNC_REFERENCE, {})  # what asyncio itself costs (same round)
        for key in ("wake.async.p50", "wake.async.p99", "wake.block.p50", "wake.block.p99"):
            if key in reference:
                m[SUBJECT]["asyncref." + key] = reference[key]
        derive(m[SUBJECT], MICRO_SIZES, ARRAY_SIZES)
    metrics: dict[str, dict[str, float]] = {n: {} for n in peers}
    for n in peers:
        keys = {k for m in per_round for k in m[n]}
        for k in keys:
            vals = [m[n][k] for m in per_round if k in m[n]]
            metrics[n][k] = float(statistics.median(vals))
    return metrics, errors, per_round


def load_previous(path: str) -> tuple[dict[str, Any], list[tuple[int, TaskResult]]]:
    """Results of an earlier run from its ``--json`` file (to re-render the report)."""
    with open(path) as fh:
        payload = json.load(fh)
    results = [
        (
            int(t.get("round", 0)),
            TaskResult(Task(**t["task"]), t["ok"], t["raw"], t["error"], t["seconds"]),
        )
        for t in payload["tasks"]
    ]
    return payload, results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or load an earlier run) and print the report."""
    args = parse_args(argv)
    t_start = time.monotonic()
    previous: dict[str, Any] | None = None
    if args.from_json:
        previous, results = load_previous(args.from_json)
        old = previous["args"]
        args.quick, args.peers, args.rounds = old["quick"], old["peers"], old["rounds"]
        only = {w.strip() for w in (old.get("only") or "").split(",") if w.strip()}
        args.only_set = only or set(WORKLOAD_CHOICES)
    info = previous["machine"] if previous else machine()
    cfg = previous["settings"] if previous else settings(args.quick, args.iterations)

    classes = [c for c in ALL_CLASSES if c.name in (SUBJECT, TYPED_PEER)]
    if args.peers:
        classes += PEER_CLASSES
    if args.peer:
        wanted = {p.strip() for p in args.peer.split(",")}
        classes = [c for c in classes if c.name in wanted or c.name in (SUBJECT, TYPED_PEER)]
    peers = {c.name: c() for c in classes}
    if previous:
        skipped = dict(previous["skipped"])
        removed = previous.get("cleanup_removed", [])
    else:
        skipped = {n: why for n, p in peers.items() if (why := p.unavailable())}
    runnable = [n for n in peers if n not in skipped]
    peer_names = [c.name for c in PEER_CLASSES if c.name in peers]

    if not previous:
        run_dir = tempfile.mkdtemp(prefix="shmc-bench-")
        runner = Runner(run_dir, {n: peers[n] for n in runnable})
        seq_tasks, idle_tasks = plan(
            peers, [n for n in runnable if n != TYPED_PEER], args.only_set, cfg, args.quick
        )
        seq_tasks = [t for t in seq_tasks if t.peer in runnable]  # e.g. no typed peer
        try:
            results = run_tasks(runner, seq_tasks, idle_tasks, args.rounds)
        finally:
            removed = runner.cleanup()
            if not args.keep_logs:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                print(f"[benchmark] child logs kept in {run_dir}", file=sys.stderr)

    metrics, errors, per_round = compute_metrics(list(peers), results, args.rounds)
    rows = comparison_rows(LAT_SIZES, ARRAY_SIZES, args.only_set, FIRST_SIZES)
    spin_unsupported = {n for n, p in peers.items() if not p.supports_spin}
    table, table_data = build_table(
        rows, SUBJECT, peer_names, metrics, errors, skipped, spin_unsupported
    )
    elapsed = previous["elapsed_s"] if previous else time.monotonic() - t_start

    out = sys.stdout
    kind = "quick" if args.quick else "full"
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    out.write(f"# shm_comm benchmark ({kind}{rounds})\n\n")
    out.write(
        f"{info['date']} — {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, Python {info['python']}; run took {elapsed:.0f} s.\n\n"
    )
    for name in (SUBJECT, *peer_names):
        if name in skipped:
            out.write(f"- skipped {name}: {skipped[name]}\n")
    if not args.peers:
        out.write("- peers not run (use --peers)\n")
    out.write("\n" + table + "\n\n")
    out.write(
        "Last column: factor by which shm_comm beats the best peer on that row (>1) or "
        "loses to it (<1). Array rows: shm_comm column = ArrayPublisher.send; in the loan() "
        "rows the shm_comm column is the loan() path and the peers repeat their only path.\n\n"
    )
    extra = shm_comm_table(metrics.get(SUBJECT, {}), MICRO_SIZES, ARRAY_SIZES)
    if extra:
        out.write(extra + "\n\n")
    out.write("How each peer was used:\n\n")
    for name in (SUBJECT, TYPED_PEER, *peer_names):
        if name in peers:
            out.write(f"- **{name}**: {peers[name].description}\n")
    failures = [(rnd, r) for rnd, r in results if not r.ok]
    if failures:
        out.write("\nFailures:\n\n")
        for rnd, r in failures:
            out.write(f"- round {rnd + 1}, {r.task.key}: {r.error}\n")
    out.flush()

    if args.json:
        payload = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if k != "only_set"},
            "elapsed_s": elapsed,
            "settings": cfg,
            "skipped": skipped,
            "metrics": metrics,
            "metrics_per_round": per_round,
            "errors": errors,
            "table": table_data,
            "cleanup_removed": removed,
            "tasks": [
                {
                    "round": rnd,
                    "key": r.task.key,
                    "task": asdict(r.task),
                    "ok": r.ok,
                    "error": r.error,
                    "seconds": r.seconds,
                    "raw": r.roles,
                }
                for rnd, r in results
            ],
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1, default=str)
    if args.plot:
        try:
            plot(args.plot, SUBJECT, peer_names, [r for _, r in results], metrics, ARRAY_SIZES)
        except Exception as exc:  # plotting is optional
            print(f"[benchmark] plot failed: {exc!r}", file=sys.stderr)
    return 0


def _progress(bar: Any, done: list[TaskResult]) -> None:
    """Advance the progress bar; report failures on stderr as they happen."""
    for res in done:
        if not res.ok:
            print(f"[benchmark] {res.task.key} failed: {res.error}", file=sys.stderr)
        if bar is not None:
            bar.update(1)


if __name__ == "__main__":
    sys.exit(main())
