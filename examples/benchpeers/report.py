"""Turns raw task results into metrics, Markdown tables, JSON and a plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .runner import TaskResult
from .workloads import FRAME_1080P, KIB, MIB

Metrics = dict[str, dict[str, float]]  # peer -> metric id -> value
Errors = dict[str, dict[str, str]]  # peer -> task group -> error


def pct(values: list[int] | list[float], q: float) -> float:
    """Percentile of a non-empty list (linear interpolation)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def size_label(nbytes: int) -> str:
    """64 -> "64 B", 4096 -> "4 KiB", 1048576 -> "1 MiB"."""
    if nbytes == FRAME_1080P:
        return "1080p RGB frame (6.2 MB)"
    if nbytes >= MIB and nbytes % MIB == 0:
        return f"{nbytes // MIB} MiB"
    if nbytes >= KIB and nbytes % KIB == 0:
        return f"{nbytes // KIB} KiB"
    return f"{nbytes} B"


def group_of(res: TaskResult) -> str:
    """Task group id, used to attribute a failure to the rows it would have produced."""
    mode = res.task.params.get("mode")
    return f"{res.task.workload}-{mode}" if mode else res.task.workload


def extract(res: TaskResult) -> dict[str, float]:
    """Metric id -> value for one successful task."""
    wl = res.task.workload
    p = res.task.params
    m: dict[str, float] = {}
    if wl == "pingpong":
        for case, v in res.roles["a"].items():
            mode, size = case.split("-")
            one_way_us = [x / 2 / 1000 for x in v["rtt_ns"]]
            base = f"lat.{mode}.{size}"
            m[base + ".p50"] = pct(one_way_us, 50)
            m[base + ".p99"] = pct(one_way_us, 99)
    elif wl == "stream":
        a, b = res.roles["a"], res.roles["b"]
        k = "streamblk" if p.get("block_send") else "stream"
        span = (b["t_last"] - a["t_start"]) / 1e9
        m[f"{k}.delivered_rate"] = b["received"] / span if span > 0 and b["received"] else 0.0
        m[f"{k}.delivered_frac"] = 100.0 * b["received"] / max(1, a["attempted"])
        m[f"{k}.send_rate"] = a["attempted"] / max(1e-9, (a["t_end"] - a["t_start"]) / 1e9)
        m[f"{k}.received"] = float(b["received"])
        m[f"{k}.attempted"] = float(a["attempted"])
        if "drop_count" in a["sender_stats"]:
            m[f"{k}.drop_count"] = float(a["sender_stats"]["drop_count"])
        if "dropped" in b["receiver_stats"]:
            m[f"{k}.sub_dropped"] = float(b["receiver_stats"]["dropped"])
    elif wl == "arrays":
        for key, bv in res.roles["b"].items():
            av = res.roles["a"][key]
            variant, nbytes_s = key.split("-")
            nbytes = int(nbytes_s)
            span = (bv["t_last"] - av["t2_start"]) / 1e9
            base = f"arr.{variant}.{nbytes}"
            m[base + ".gbps"] = av["n_thr"] * nbytes / span / 1e9 if span > 0 else 0.0
            m[base + ".lat_p50_ms"] = pct(bv["lat_ns"], 50) / 1e6
            m[base + ".lat_p99_ms"] = pct(bv["lat_ns"], 99) / 1e6
            m[base + ".send_p50_us"] = pct(av["send_ns"], 50) / 1e3
            m[base + ".ndarray"] = 1.0 if bv["ndarray"] else 0.0
    elif wl in ("wake", "idle"):
        b = res.roles["b"]
        mode = p["mode"]
        if b.get("wake_ns"):
            wake_us = [x / 1000 for x in b["wake_ns"]]
            m[f"wake.{mode}.p50"] = pct(wake_us, 50)
            m[f"wake.{mode}.p99"] = pct(wake_us, 99)
        if "idle_cpu_s" in b:
            # normalise to exactly the nominal idle period
            scale = p["idle_seconds"] / max(1e-9, b["idle_wall_s"])
            m[f"idle.{mode}.cpu_ms"] = b["idle_cpu_s"] * 1000 * scale
            m[f"idle.{mode}.vcsw"] = float(b["idle_vcsw"])
    elif wl == "bstream":
        a, b = res.roles["a"], res.roles["b"]
        span = max(1, b["t_last"] - a["t_start"])  # as for the stream row
        m["bstream.rate"] = b["received"] / (span / 1e9)
        m["bstream.send_rate"] = a["sent"] / (max(1, a["t_end"] - a["t_start"]) / 1e9)
        m["bstream.delivered_frac"] = 100.0 * b["received"] / max(1, a["sent"])
    elif wl == "batch":
        b = res.roles["b"]
        m["batch.batch_us"] = pct(b["batch_ns"], 50) / 1000
        m["batch.loop_us"] = pct(b["loop_ns"], 50) / 1000
        m["batch.ratio"] = m["batch.loop_us"] / max(1e-9, m["batch.batch_us"])
        m["batch.got_batch"] = float(min(b["got_batch"]))
        m["batch.got_loop"] = float(min(b["got_loop"]))
    elif wl == "first":
        for key, bv in res.roles["b"].items():
            av = res.roles["a"][key]
            n = int(key)
            lat = bv["lat_ns"]
            first, later = float(np.median(lat[:8])), float(np.median(lat[8:]))
            base = f"first.{n}"
            m[base + ".first1_ms"] = lat[0] / 1e6
            m[base + ".first8_ms"] = first / 1e6
            m[base + ".later_ms"] = later / 1e6
            m[base + ".ratio"] = first / later if later > 0 else math.nan
            m[base + ".open_pub_ms"] = av["open_ns"] / 1e6
            m[base + ".open_sub_ms"] = bv["open_ns"] / 1e6
            files = {**av["shm"], **bv["shm"]}  # both processes' mappings, each file once
            if files:
                m[base + ".shm_used_mib"] = sum(used for _size, used in files.values()) / MIB
                m[base + ".shm_size_mib"] = sum(size for size, _used in files.values()) / MIB
    elif wl == "blocksend":
        a = res.roles["a"]
        for key, label in (("nonblock_ns", "nonblock"), ("block_ns", "block")):
            one_way_us = [x / 2 / 1000 for x in a[key]]
            m[f"blocksend.{label}.p50"] = pct(one_way_us, 50)
            m[f"blocksend.{label}.p99"] = pct(one_way_us, 99)
        for q in ("p50", "p99"):
            m[f"blocksend.ratio.{q}"] = m[f"blocksend.block.{q}"] / m[f"blocksend.nonblock.{q}"]
    elif wl == "micro":
        for key, v in res.roles["a"].items():
            n = int(key)
            m[f"micro.{n}.memcpy_us"] = v["memcpy_ns"] / 1000
            m[f"micro.{n}.memcpy_gbps"] = n / v["memcpy_ns"]
            m[f"micro.{n}.send_us"] = v["send_ns"] / 1000
            m[f"micro.{n}.loan_us"] = v["loan_ns"] / 1000
            if "loan_cold_ns" in v:
                m[f"micro.{n}.loan_cold_us"] = v["loan_cold_ns"] / 1000
            m[f"micro.{n}.loan_fill_us"] = v["loan_fill_ns"] / 1000
    return m


@dataclass(frozen=True)
class Row:
    """One comparison row of the main table."""

    metric: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    group: str  # task group producing this metric
    digits: int = 1
    #: Metric shown for the peers when it differs from shm_comm's (the loan() rows compare
    #: shm_comm's loan path with the peers' only array path).
    peer_metric: str = ""


def comparison_rows(lat_sizes: list[int], array_sizes: list[int], include: set[str],
                    first_sizes: list[int] | None = None) -> list[Row]:
    """Rows of the main table (shm_comm vs peers), in display order."""
    rows: list[Row] = []
    if "latency" in include:
        for mode, mode_label in (("block", "blocking recv"), ("spin", "busy-poll")):
            for size in lat_sizes:
                for q in ("p50", "p99"):
                    rows.append(
                        Row(
                            f"lat.{mode}.{size}.{q}",
                            f"one-way latency {size_label(size)} {q}, {mode_label}",
                            "µs",
                            "lower",
                            "pingpong",
                        )
                    )
    if "stream" in include:
        rows += [
            Row(
                "stream.delivered_rate",
                "stream 64 B: delivered msgs/s",
                "msg/s",
                "higher",
                "stream",
                0,
            ),
            Row("stream.delivered_frac", "stream 64 B: delivered / sent", "%", "higher", "stream"),
        ]
    if "arrays" in include:
        for n in array_sizes:
            lab = size_label(n)
            rows += [
                Row(
                    f"arr.main.{n}.gbps",
                    f"{lab} float64 array: throughput",
                    "GB/s",
                    "higher",
                    "arrays",
                    2,
                ),
                Row(
                    f"arr.main.{n}.lat_p50_ms",
                    f"{lab} float64 array: latency p50",
                    "ms",
                    "lower",
                    "arrays",
                    3,
                ),
                Row(
                    f"arr.main.{n}.lat_p99_ms",
                    f"{lab} float64 array: latency p99",
                    "ms",
                    "lower",
                    "arrays",
                    3,
                ),
                Row(
                    f"arr.loan.{n}.gbps",
                    f"{lab} array, shm_comm via loan(): throughput",
                    "GB/s",
                    "higher",
                    "arrays",
                    2,
                    f"arr.main.{n}.gbps",
                ),
                Row(
                    f"arr.loan.{n}.lat_p50_ms",
                    f"{lab} array, shm_comm via loan(): latency p50",
                    "ms",
                    "lower",
                    "arrays",
                    3,
                    f"arr.main.{n}.lat_p50_ms",
                ),
            ]
    if "first" in include:
        for n in first_sizes or []:
            lab = size_label(n)
            rows += [
                Row(f"first.{n}.first1_ms", f"{lab}, fresh channel: latency of message 1",
                    "ms", "lower", "first", 3),
                Row(f"first.{n}.first8_ms",
                    f"{lab}, fresh channel: latency of messages 1-8 (median)", "ms", "lower",
                    "first", 3),
                Row(f"first.{n}.ratio", f"{lab}, fresh channel: messages 1-8 / later ones",
                    "x", "lower", "first", 2),
                Row(f"first.{n}.open_pub_ms", f"{lab}, 4 deep: open the publishing end", "ms",
                    "lower", "first", 1),
                Row(f"first.{n}.open_sub_ms", f"{lab}, 4 deep: open the subscribing end",
                    "ms", "lower", "first", 1),
                Row(f"first.{n}.shm_used_mib", f"{lab}, 4 deep: /dev/shm in use per channel",
                    "MiB", "lower", "first", 1),
            ]
    if "idle" in include:
        rows.append(
            Row(
                "idle.block.cpu_ms",
                "CPU of a subscriber blocked 2 s on a silent channel",
                "ms",
                "lower",
                "idle-block",
                2,
            )
        )
    if "wakeup" in include:
        rows += [
            Row(
                "wake.block.p50",
                "wake-up latency of a blocked recv p50",
                "µs",
                "lower",
                "wake-block",
            ),
            Row(
                "wake.block.p99",
                "wake-up latency of a blocked recv p99",
                "µs",
                "lower",
                "wake-block",
            ),
        ]
    return rows


def derive(m: dict[str, float], micro_sizes: list[int], array_sizes: list[int]) -> None:
    """Ratios computed within one round (medians of ratios, not ratios of medians)."""
    if "lat.block.typed.p50" in m and "lat.block.48.p50" in m:
        m["typed.ratio"] = m["lat.block.typed.p50"] / m["lat.block.48.p50"]
    for n in micro_sizes:
        if f"micro.{n}.send_us" in m:
            m[f"micro.{n}.send_frac"] = m[f"micro.{n}.memcpy_us"] / m[f"micro.{n}.send_us"]
    for n in array_sizes:
        if f"arr.send.{n}.gbps" in m and f"micro.{n}.memcpy_gbps" in m:
            m[f"arr.send.{n}.memcpy_frac"] = m[f"arr.send.{n}.gbps"] / m[f"micro.{n}.memcpy_gbps"]


def alias_main_array_metrics(metrics: Metrics) -> None:
    """Map each peer's primary array path to ``arr.main.*`` (shm_comm: ``send``)."""
    for values in metrics.values():
        for k in list(values):
            if k.startswith(("arr.default.", "arr.send.")):
                values["arr.main." + k.split(".", 2)[2]] = values[k]


def fmt_value(v: float, digits: int) -> str:
    """Human formatting with thousands separators for big numbers."""
    if math.isnan(v):
        return "nan"
    if abs(v) >= 10000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def build_table(
    rows: list[Row],
    subject: str,
    peers: list[str],
    metrics: Metrics,
    errors: Errors,
    skipped: dict[str, str],
    spin_unsupported: set[str],
) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table + the same data as a list of dicts (for JSON)."""
    cols = [subject, *peers]
    head = ["workload", "unit", *cols, "best peer", "shm_comm vs best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    data: list[dict[str, Any]] = []
    for row in rows:
        cells: list[str] = []
        values: dict[str, float | None] = {}
        for peer in cols:
            key = row.peer_metric if (row.peer_metric and peer != subject) else row.metric
            v = metrics.get(peer, {}).get(key)
            values[peer] = v
            if v is not None:
                cells.append(fmt_value(v, row.digits))
            elif peer in skipped:
                cells.append("skipped")
            elif row.group in errors.get(peer, {}):
                cells.append("FAIL: " + _short(errors[peer][row.group]))
            elif ".spin." in row.metric and peer in spin_unsupported:
                cells.append("n/a")
            else:
                cells.append("—")
        peer_vals: dict[str, float] = {p: v for p in peers if (v := values[p]) is not None}
        best_peer, best_val, ratio_s = "—", None, "—"
        ratio: float | None = None
        if peer_vals:
            pick = min if row.better == "lower" else max
            best_peer = pick(peer_vals, key=peer_vals.__getitem__)
            best_val = peer_vals[best_peer]
            mine = values[subject]
            if mine is not None and best_val is not None:
                ratio = _advantage(mine, best_val, row.better)
                ratio_s = "—" if ratio is None else _fmt_ratio(ratio)
        lines.append(
            "| "
            + " | ".join(
                [row.label, f"{row.unit} ({row.better} is better)", *cells, best_peer, ratio_s]
            )
            + " |"
        )
        data.append(
            {
                "metric": row.metric,
                "label": row.label,
                "unit": row.unit,
                "better": row.better,
                "values": values,
                "cells": dict(zip(cols, cells, strict=True)),
                "best_peer": None if best_peer == "—" else best_peer,
                "advantage": ratio,
            }
        )
    return "\n".join(lines), data


def _fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def _advantage(mine: float, best: float, better: str) -> float | None:
    """>1 means shm_comm is better than the best peer by that factor."""
    if better == "lower":
        return best / mine if mine > 0 else None
    return mine / best if best > 0 else None


def _short(msg: str, n: int = 48) -> str:
    msg = msg.replace("|", "/").replace("\n", " ")
    return msg if len(msg) <= n else msg[: n - 1] + "…"


def shm_comm_table(m: dict[str, float], micro_sizes: list[int], arr_sizes: list[int]) -> str:
    """Second table: measurements that only exist for shm_comm."""
    lines = ["| shm_comm measurement | value |", "|---|---|"]

    def add(label: str, key: str, fmt: str) -> None:
        if key in m:
            lines.append(f"| {label} | {fmt.format(m[key])} |")

    add(
        "typed 6xfloat64 via ArrayPublisher, one-way p50 (blocking)",
        "lat.block.typed.p50",
        "{:.1f} µs",
    )
    add("raw send_bytes 48 B, one-way p50 (blocking)", "lat.block.48.p50", "{:.1f} µs")
    add("typed / raw latency ratio", "typed.ratio", "{:.2f}x")
    add("batched stream 64 B (send_bytes_batch of 1000 / recv_bytes_batch), delivered",
        "bstream.rate", "{:,.0f} msg/s")
    add("batched stream 64 B, delivered / sent (publisher waits for room)",
        "bstream.delivered_frac", "{:.1f} %")
    add("recv_batch(1000) of 6-float messages", "batch.batch_us", "{:.0f} µs")
    add("1,000 x recv(copy=False) into a preallocated array", "batch.loop_us", "{:.0f} µs")
    add("1,000 recv calls / one recv_batch", "batch.ratio", "{:.1f}x")
    for n in micro_sizes:
        lab = size_label(n)
        add(f"np.copyto {lab} (memcpy reference)", f"micro.{n}.memcpy_gbps", "{:.2f} GB/s")
        add(f"ArrayPublisher.send {lab}, no subscriber", f"micro.{n}.send_us", "{:.1f} µs")
        if f"micro.{n}.send_frac" in m:
            frac = m[f"micro.{n}.send_frac"]
            lines.append(f"| send {lab}: fraction of memcpy speed | {100 * frac:.0f} % |")
        add(f"loan() enter+exit {lab} (no fill)", f"micro.{n}.loan_us", "{:.1f} µs")
        add(f"loan() enter+exit {lab}, right after a send and a memcpy of {lab} (cold caches)",
            f"micro.{n}.loan_cold_us", "{:.1f} µs")
        add(f"loan() + np.copyto fill {lab}", f"micro.{n}.loan_fill_us", "{:.1f} µs")
    for n in arr_sizes:
        lab = size_label(n)
        if f"arr.send.{n}.memcpy_frac" in m:
            frac = m[f"arr.send.{n}.memcpy_frac"]
            lines.append(
                f"| end-to-end {lab} send path GB/s as fraction of memcpy | {100 * frac:.0f} % |"
            )
        add(
            f"send() call {lab} inside the 2-process run, p50",
            f"arr.send.{n}.send_p50_us",
            "{:.0f} µs",
        )
    add("stream: publisher drop_count", "stream.drop_count", "{:.0f}")
    add("stream: subscriber dropped", "stream.sub_dropped", "{:.0f}")
    add("stream: messages attempted", "stream.attempted", "{:.0f}")
    add(
        "stream with send_bytes(block=True): delivered msgs/s",
        "streamblk.delivered_rate",
        "{:,.0f}",
    )
    add(
        "stream with send_bytes(block=True): delivered / sent",
        "streamblk.delivered_frac",
        "{:.1f} %",
    )
    add("idle CPU, awaiting subscriber (recv_bytes_async in asyncio), 2 s", "idle.async.cpu_ms",
        "{:.2f} ms")
    add("idle CPU, blocked subscriber (default), 2 s, same run", "idle.block.cpu_ms", "{:.2f} ms")
    add("voluntary context switches while awaiting 2 s", "idle.async.vcsw", "{:.0f}")
    add("wake-up latency, awaiting subscriber (recv_bytes_async) p50", "wake.async.p50",
        "{:.1f} µs")
    add("wake-up latency, awaiting subscriber (recv_bytes_async) p99", "wake.async.p99",
        "{:.1f} µs")
    for q in ("p50", "p99"):
        if f"wake.async.{q}" in m and f"wake.block.{q}" in m:
            ratio = m[f"wake.async.{q}"] / max(1e-9, m[f"wake.block.{q}"])
            lines.append(f"| wake-up latency {q}, awaiting / blocked (same run) | {ratio:.2f}x |")
    for q in ("p50", "p99"):
        ref_async, ref_block = m.get(f"asyncref.wake.async.{q}"), m.get(f"asyncref.wake.block.{q}")
        if ref_async is None or not ref_block:
            continue
        lines.append(f"| asyncio reference {q}: a pipe awaited with loop.add_reader | "
                     f"{ref_async:.1f} µs |")
        lines.append(f"| asyncio reference {q}, awaited / read blocking (mp.Pipe, same run) | "
                     f"{ref_async / ref_block:.2f}x |")
        if f"wake.async.{q}" in m:
            lines.append(f"| wake-up latency {q}, awaiting subscriber / the asyncio reference "
                         f"(same run) | {m[f'wake.async.{q}'] / ref_async:.2f}x |")
    for q in ("p50", "p99"):
        add(f"busy-poll ping-pong 64 B, send_bytes(block=False), one-way {q}",
            f"blocksend.nonblock.{q}", "{:.2f} µs")
        add(f"busy-poll ping-pong 64 B, send_bytes(block=True), one-way {q}",
            f"blocksend.block.{q}", "{:.2f} µs")
        add(f"block=True / block=False {q} (alternating chunks, same channels)",
            f"blocksend.ratio.{q}", "{:.2f}x")
    add("idle CPU, busy-poll subscriber (poll_interval=0), 2 s", "idle.spin.cpu_ms", "{:.0f} ms")
    add("wake-up latency, busy-poll subscriber p50", "wake.spin.p50", "{:.1f} µs")
    add("wake-up latency, busy-poll subscriber p99", "wake.spin.p99", "{:.1f} µs")
    add("voluntary context switches while blocked 2 s (default)", "idle.block.vcsw", "{:.0f}")
    return "\n".join(lines) if len(lines) > 2 else ""


def plot(
    path: str,
    subject: str,
    peers: list[str],
    results: list[TaskResult],
    metrics: Metrics,
    array_sizes: list[int],
) -> None:
    """Latency distributions (box plots, log scale) and throughput / CPU bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [subject, *peers]
    fig, axes = plt.subplots(2, 3, figsize=(19, 9.5))

    def latency_samples(mode: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for r in results:
            if r.ok and r.task.workload == "pingpong" and r.task.peer in cols:
                v = r.roles["a"].get(f"{mode}-64")
                if v and v["rtt_ns"]:
                    out.setdefault(r.task.peer, []).extend(x / 2e3 for x in v["rtt_ns"])
        return out

    def wake_samples() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for r in results:
            is_wake = r.ok and r.task.workload == "wake" and r.task.params["mode"] == "block"
            if is_wake and r.roles["b"].get("wake_ns"):
                out.setdefault(r.task.peer, []).extend(x / 1e3 for x in r.roles["b"]["wake_ns"])
        return out

    boxes = (
        (axes[0][0], latency_samples("block"), "one-way latency 64 B, blocking receive"),
        (axes[0][1], latency_samples("spin"), "one-way latency 64 B, busy-poll (2 spinners)"),
        (axes[0][2], wake_samples(), "wake-up latency of a blocked receiver"),
    )
    for ax, s, title in boxes:
        names = [c for c in cols if c in s]
        if names:
            ax.boxplot([s[n] for n in names], whis=(1, 99), showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
            ax.set_yscale("log")
        ax.set_title(title + "\n(box p25-p75, whiskers p1-p99)")
        ax.set_ylabel("µs")
        ax.grid(True, axis="y", alpha=0.3)

    ax = axes[1][0]
    names = [c for c in cols if "stream.delivered_rate" in metrics.get(c, {})]
    ax.bar(names, [metrics[n]["stream.delivered_rate"] for n in names], color="tab:blue")
    ax.set_title("streaming 64 B: delivered messages/s")
    ax.tick_params(axis="x", rotation=20)
    ax.grid(True, axis="y", alpha=0.3)

    ax = axes[1][1]
    width = 0.8 / max(1, len(array_sizes))
    names = [*cols, subject + " loan"]
    mine = metrics.get(subject, {})
    for j, n in enumerate(array_sizes):
        vals = []
        for c in names:
            key = f"arr.loan.{n}.gbps" if c.endswith(" loan") else f"arr.main.{n}.gbps"
            src = subject if c.endswith(" loan") else c
            vals.append(metrics.get(src, {}).get(key, 0.0))
        bars = ax.bar(np.arange(len(names)) + j * width, vals, width, label=size_label(n))
        ref = mine.get(f"micro.{n}.memcpy_gbps")
        if ref:
            ax.axhline(
                ref,
                ls="--",
                lw=1,
                color=bars.patches[0].get_facecolor(),
                label=f"np.copyto {size_label(n)}",
            )
    ax.set_xticks(np.arange(len(names)) + width * (len(array_sizes) - 1) / 2, names, rotation=20)
    ax.set_title("float64 arrays, producer -> consumer ndarray: GB/s")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)

    ax = axes[1][2]
    names = [c for c in cols if "idle.block.cpu_ms" in metrics.get(c, {})]
    ax.bar(names, [metrics[n]["idle.block.cpu_ms"] for n in names], color="tab:green")
    ax.set_title("CPU used by a receiver blocked 2 s on a silent channel")
    ax.set_ylabel("ms")
    ax.tick_params(axis="x", rotation=20)
    ax.grid(True, axis="y", alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
