"""Notebook 3 in a real JupyterLab, driven by headless Chromium: the widgets draw and keep up.

Opens ``notebooks/03_live_widgets.ipynb``, runs every cell above the final "Stop" cell (the
simulator keeps publishing), then checks from the page itself:

* both LivePlots draw (inked, coloured pixels on their canvas) and keep updating: frames are
  counted in the browser while the simulator runs, at least MIN_FPS for the 1 kHz IMU;
* the ImageView shows the 640x480 RGB camera at MIN_FPS or more, with the kernel's CPU and
  the bytes per frame recorded;
* while a cell runs for RUNNING_CELL seconds (executed in the same kernel over its shell
  channel, as JupyterLab does), the IMU plot and the camera stay live at MIN_FPS or more;
* the StatsMonitor shows a plausible IMU rate;
* after switching JupyterLab to its dark theme, the plots are drawn on a dark background;
* the Pause button freezes the plot (its pixels stop changing) and Resume restarts it;
* screenshots go to logs/live_widgets.png (light theme) and logs/live_widgets_dark.png.

Then it runs the final cell, which stops the simulator and the widgets: the plot must show
that the publisher is gone. The fixtures (conftest.py) prove that the server, its kernel and
the simulator exit and that no /dev/shm/shmc_* segment is left.

Measured numbers (frame rates, kernel CPU, phase durations) are printed and written to
logs/browser_metrics.json; only the floor MIN_FPS is asserted.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.browser

LOGS = Path(__file__).resolve().parents[2] / "logs"
NOTEBOOK = "notebooks/03_live_widgets.ipynb"
MIN_FPS = 20.0
# Issue 16's floor. Frames are counted in the page (data-frames: drawn) by its own clock,
# from after start-up (plots live, camera drawing); no fixture works meanwhile (measured:
# pytest, Playwright's driver and Chromium's browser process take under 15 % of a core
# together in the windows). A quiet 2-core machine gives about 29.5 fps for the plots, 30 for
# the camera (every frame of the 30 Hz simulator: kernel_read_per_s = kernel_sent_per_s) and
# 28.5-29 while a cell runs; two CPU hogs alongside, 29.7 for the camera. A saturated machine
# gives less: three of these tests at once plus two CPU hogs (load 8.4) gave 16.5-22.
# machine_cpu_percent in the figures tells which it was (200 = both cores busy).
FPS_FRAMES = 120  # frames counted for the frame rate (about 4 s at 30 fps)...
FPS_MAX_SECONDS = 10.0  # ...or fewer, if that takes longer
IMU = '.shmc-liveplot[data-channel="imu"] canvas'
JOINTS = '.shmc-liveplot[data-channel="joints"] canvas'
CAMERA = '.shmc-imageview[data-channel="camera"] canvas'
RUNNING_CELL = 10.0  # seconds a cell runs while the widgets must stay live

# Reads a canvas back: frame counters from its data-* hooks, the number of coloured
# ("inked") pixels (series colours; text, grid and background are grey), and a pixel hash.
CANVAS_STATE = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let inked = 0, hash = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) inked++;
    hash = (Math.imul(hash, 31) + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
  }
  return {frames: +c.dataset.frames, seq: +c.dataset.seq, n: +c.dataset.n, inked, hash};
}"""


def canvas_state(page: Any, selector: str) -> dict[str, int]:
    state: dict[str, int] = page.evaluate(CANVAS_STATE, selector)
    return state


def wait_frames(page: Any, selector: str, more: int, timeout_ms: float) -> None:
    """Wait until the canvas has drawn ``more`` frames beyond its current count."""
    page.wait_for_function(
        "([sel, target]) => +document.querySelector(sel).dataset.frames >= target",
        arg=[selector, canvas_state(page, selector)["frames"] + more],
        timeout=timeout_ms,
    )


def measure_fps(page: Any, kernel: psutil.Process, views: dict[str, str] | None = None,
                seconds: float | None = None) -> dict[str, float]:  # fmt: skip
    """Frames per second of each view (name -> canvas selector) and kernel CPU meanwhile.

    Counts FPS_FRAMES frames of the first view (at most FPS_MAX_SECONDS), or exactly
    ``seconds`` of wall time when given.
    """
    views = views or {"imu": IMU, "joints": JOINTS}
    sels = list(views.values())
    page.evaluate(
        """(sels) => { window.__fps0 = {t: performance.now(),
            f: sels.map(s => +document.querySelector(s).dataset.frames)}; }""",
        sels,
    )
    kernel.cpu_percent(None)
    psutil.cpu_percent(None)
    started = time.time()
    if seconds is not None:
        page.wait_for_timeout(seconds * 1000)  # a measuring window, not a synchronisation
    else:
        # FPS_FRAMES frames, or FPS_MAX_SECONDS if the plot is slower: a number either way.
        page.wait_for_function(
            """([a, n, limit]) =>
                   +document.querySelector(a).dataset.frames >= window.__fps0.f[0] + n
                   || performance.now() - window.__fps0.t > limit""",
            arg=[sels[0], FPS_FRAMES, FPS_MAX_SECONDS * 1000],
            timeout=(FPS_MAX_SECONDS + 30) * 1000,
        )
    cpu = kernel.cpu_percent(None)
    counts: list[float] = page.evaluate(
        """(sels) => { const s = (performance.now() - window.__fps0.t) / 1000;
            return [s, ...sels.map((q, i) =>
                (+document.querySelector(q).dataset.frames - window.__fps0.f[i]) / s)]; }""",
        sels,
    )
    fps = {"seconds": counts[0], **dict(zip(views, counts[1:], strict=True))}
    fps["kernel_cpu_percent"] = cpu
    # How busy the whole machine was meanwhile (200 % is two saturated cores): frame rates
    # fall when other work starves the page, its server and its kernel (see MIN_FPS).
    fps["machine_cpu_percent"] = psutil.cpu_percent(None) * psutil.cpu_count()
    fps["load_average"] = os.getloadavg()[0]
    fps["window_unix_time"] = [started, time.time()]  # to line up with a load log
    return fps


def kernel_client(lab: dict[str, Any], notebook: str) -> Any:
    """A client of the notebook's kernel on its shell channel only (its iopub would fall
    behind the widgets' traffic; the recipe's pitfall 8)."""
    from jupyter_client import BlockingKernelClient

    with urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}") as r:
        sessions = json.loads(r.read())
    kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"].endswith(notebook))
    kc = BlockingKernelClient(connection_file=str(lab["runtime"] / f"kernel-{kernel_id}.json"))
    kc.load_connection_file()
    kc.start_channels(iopub=False, stdin=False, hb=False)
    return kc


def run_in_kernel(kc: Any, code: str, expressions: dict[str, str] | None = None,
                  timeout: float = 60.0) -> dict[str, str]:  # fmt: skip
    """Execute ``code`` in the kernel; the text of ``expressions`` evaluated after it."""
    msg_id = kc.execute(code, user_expressions=expressions or {})
    return reply_of(kc, msg_id, timeout)


def reply_of(kc: Any, msg_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    content = reply["content"]
    assert content["status"] == "ok", content
    return {k: v["data"]["text/plain"] for k, v in content["user_expressions"].items()
            if v.get("status") == "ok"}  # fmt: skip


def kernel_process(lab: dict[str, Any]) -> psutil.Process:
    for p in psutil.Process(lab["pid"]).children(recursive=True):
        if "ipykernel_launcher" in " ".join(p.cmdline()):
            return p
    raise AssertionError("no kernel process under the server")


def run_menu(page: Any, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def test_live_widgets_notebook(lab: dict[str, Any], page: Any) -> None:
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole notebook in view
    page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}&reset")
    status_bar = page.locator("#jp-main-statusbar")
    status_bar.get_by_text(re.compile(r"\(ipykernel\) \| Idle$")).wait_for(timeout=90_000)
    phases["open_notebook_to_idle"] = time.monotonic() - t0

    # Select the last cell ("Stop") and run everything above it.
    cells = page.locator(".jp-Notebook .jp-Cell")
    code_cells = page.locator(".jp-Notebook .jp-CodeCell")
    n_code = code_cells.count()
    assert n_code >= 5
    code_cells.last.locator(".jp-InputPrompt").click()
    t1 = time.monotonic()
    run_menu(page, "Run All Above Selected Cell")
    page.wait_for_function(
        """(n) => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')]
                      .slice(0, n).map(c => c.querySelector('.jp-InputPrompt').textContent);
                    return p.every(t => /\\[\\d+\\]/.test(t)); }""",
        arg=n_code - 1,
        timeout=90_000,
    )
    phases["run_all_above"] = time.monotonic() - t1
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert cells.count() > n_code  # markdown cells rendered too

    # Both plots are live and drawing.
    for sel in (IMU, JOINTS):
        page.wait_for_function(
            """(sel) => { const c = document.querySelector(sel);
                          return c && c.closest('.shmc-liveplot').dataset.status === 'live'
                                 && +c.dataset.n > 1000; }""",
            arg=sel,
            timeout=30_000,
        )
    first = canvas_state(page, IMU)
    assert first["inked"] > 1000, first
    assert canvas_state(page, JOINTS)["inked"] > 1000

    # Keeps updating: frames counted in the browser; the picture changes.
    kernel = kernel_process(lab)
    fps = measure_fps(page, kernel)
    later = canvas_state(page, IMU)
    assert later["seq"] > first["seq"]
    assert later["hash"] != first["hash"]
    assert later["inked"] > 1000
    assert fps["imu"] >= MIN_FPS, fps

    # The camera: 640x480 RGB at 30 Hz, drawn in the browser.
    page.wait_for_function(
        """(sel) => { const c = document.querySelector(sel);
                      return c && +c.dataset.frames > 5 && c.width > 0; }""",
        arg=CAMERA,
        timeout=30_000,
    )
    kc = kernel_client(lab, NOTEBOOK)
    try:
        # What the kernel read and sent meanwhile: the page can only draw what was sent.
        counts = {"read": "camera_view.frames_read", "sent": "camera_view.frames_sent",
                  "t": "__import__('time').monotonic()"}  # fmt: skip
        before = run_in_kernel(kc, "", counts)
        camera = measure_fps(page, kernel, {"camera": CAMERA, "imu": IMU})
        after = run_in_kernel(kc, "", counts)
        seconds = float(after["t"]) - float(before["t"])
        for key in ("read", "sent"):
            camera[f"kernel_{key}_per_s"] = (int(after[key]) - int(before[key])) / seconds
        camera_stats = run_in_kernel(kc, "", {
            "bytes_per_frame": "camera_view.bytes_sent / max(1, camera_view.frames_sent)",
            "last": "camera_view.last_frame_bytes", "age": "camera_view.frame_age",
        })  # fmt: skip
        camera_canvas = page.evaluate(
            """(sel) => { const c = document.querySelector(sel);
                          return {width: c.width, height: c.height, format: c.dataset.format,
                                  bytes: +c.dataset.bytes, age_ms: +c.dataset.ageMs}; }""",
            CAMERA,
        )
        assert (camera_canvas["width"], camera_canvas["height"]) == (640, 480), camera_canvas
        assert camera["camera"] >= MIN_FPS, camera

        # A cell runs for RUNNING_CELL s: acknowledgements cannot reach the kernel meanwhile,
        # and the widgets must stay live (paced by time) without flooding the page.
        sent = time.monotonic()
        msg_id = kc.execute(f"time.sleep({RUNNING_CELL})")
        status_bar.get_by_text(re.compile(r"\(ipykernel\) \| Busy$")).wait_for(timeout=10_000)
        page.wait_for_timeout(1000)  # skip the first second: measure the steady state
        # The window ends a second before the cell can end (it starts after we sent it), so
        # it lies within the running cell however late the Busy indicator showed.
        window = sent + RUNNING_CELL - 1 - time.monotonic()
        assert window >= RUNNING_CELL / 2, f"Busy showed {RUNNING_CELL - 2 - window:.1f} s late"
        running = measure_fps(page, kernel, {"imu": IMU, "camera": CAMERA, "joints": JOINTS},
                              seconds=window)  # fmt: skip
        reply_of(kc, msg_id, RUNNING_CELL + 30)
        status_bar.get_by_text(re.compile(r"\(ipykernel\) \| Idle$")).wait_for(timeout=30_000)
        wait_frames(page, IMU, 10, 10_000)  # back on acknowledgements
        wait_frames(page, CAMERA, 10, 10_000)
    finally:
        kc.stop_channels()
    assert running["imu"] >= MIN_FPS, running
    assert running["camera"] >= MIN_FPS, running

    # The StatsMonitor shows a plausible IMU rate.
    page.wait_for_function(
        """() => { const r = document.querySelector('tr[data-channel="imu"]');
                   const v = parseFloat(r ? r.dataset.rate : ''); return v > 700 && v < 1300; }""",
        timeout=15_000,
    )
    stats_rate = float(page.locator('tr[data-channel="imu"]').get_attribute("data-rate") or 0)
    assert page.locator('tr[data-channel="camera"]').get_attribute("data-alive") == "true"

    LOGS.mkdir(exist_ok=True)
    cells.first.scroll_into_view_if_needed()  # the notebook from the top: both plots
    page.screenshot(path=str(LOGS / "live_widgets.png"))
    page.locator('.shmc-liveplot[data-channel="imu"]').screenshot(path=str(LOGS / "imu_plot.png"))

    # Dark theme: the plots follow JupyterLab's theme variables.
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Settings$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^JupyterLab Dark$")).click()
    page.wait_for_function(
        """(sel) => { if (document.body.dataset.jpThemeLight !== 'false') return false;
                      const p = document.querySelector(sel).getContext('2d')
                                        .getImageData(2, 2, 1, 1).data;
                      return p[0] + p[1] + p[2] < 200; }""",
        arg=IMU,
        timeout=20_000,
    )
    wait_frames(page, IMU, 5, 10_000)
    assert canvas_state(page, IMU)["inked"] > 1000
    page.keyboard.press("Escape")
    cells.first.scroll_into_view_if_needed()
    page.screenshot(path=str(LOGS / "live_widgets_dark.png"))

    # Pause freezes the IMU plot while the joints plot moves on; Resume brings it back.
    imu_root = page.locator('.shmc-liveplot[data-channel="imu"]')
    imu_root.locator("button.shmc-pause").click()
    imu_root.locator('.shmc-badge[data-status="paused"]').wait_for(timeout=10_000)
    # A frame in flight when we clicked may still land: let the other plot draw a few first.
    wait_frames(page, JOINTS, 10, 10_000)
    paused = canvas_state(page, IMU)
    wait_frames(page, JOINTS, 30, 15_000)
    assert canvas_state(page, IMU)["hash"] == paused["hash"], "paused plot changed"
    imu_root.locator("button.shmc-pause").click()
    imu_root.locator('.shmc-badge[data-status="live"]').wait_for(timeout=10_000)
    wait_frames(page, IMU, 10, 10_000)
    assert canvas_state(page, IMU)["hash"] != paused["hash"]

    # The final cell stops the simulator, then the widgets. (Clicking inside the plot made
    # its cell the active one: select the last cell again.)
    code_cells.last.locator(".jp-InputPrompt").click()
    t2 = time.monotonic()
    run_menu(page, "Run Selected Cell and Do not Advance")
    last_output = code_cells.last.locator(".jp-OutputArea-output")
    last_output.get_by_text("segments removed").wait_for(timeout=30_000)
    phases["stop_cell"] = time.monotonic() - t2
    assert errors.count() == 0, errors.all_inner_texts()
    assert "publisher gone" in last_output.first.inner_text()
    imu_root.locator('.shmc-badge[data-status="stopped"]').wait_for(timeout=10_000)
    phases["total"] = time.monotonic() - t0

    metrics = {
        "fps": fps, "camera_fps": camera, "camera_stats": camera_stats,
        "camera_canvas": camera_canvas, "fps_while_a_cell_runs": running,
        "stats_imu_rate_hz": stats_rate, "phases_s": phases, "imu_canvas": later,
        "stop_cell_output": last_output.all_inner_texts(), "load_average": os.getloadavg(),
    }  # fmt: skip
    (LOGS / "browser_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


# --------------------------------------------------------------------------------------------
# ImageView: the pixels on the canvas are the published ones; waiting and gone states.

PATTERN_NOTEBOOK = "notebooks/imageview_check.ipynb"
PATTERN_CELLS = [
    """\
import numpy as np
from shm_comm import ArrayPublisher
from shm_comm.widgets import ImageView

def quadrants(colors, shape=(480, 640)):
    h, w = shape[0] // 2, shape[1] // 2
    frame = np.empty((*shape, 3), np.uint8)
    for (r, c), color in zip([(0, 0), (0, 1), (1, 0), (1, 1)], colors):
        frame[r * h:(r + 1) * h, c * w:(c + 1) * w] = color
    return frame

pattern = ArrayPublisher("nb9_pattern", dtype=np.uint8, shape=(480, 640, 3), num_slots=4)
pattern.send(quadrants([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]))
pattern_view = ImageView("nb9_pattern", title="pattern")
pattern_view""",
    """\
depth = ArrayPublisher("nb9_depth", dtype=np.uint16, shape=(120, 160), num_slots=4)
mm = np.full((120, 160), 1000, np.uint16)
mm[:, 80:] = 3000
mm[:60, :40] = 2000
mm[60:, :40] = 0  # no measurement: black
depth.send(mm)
ImageView("nb9_depth", vrange=(1000, 3000), colormap="gray", encoding="png")""",
    """\
later_view = ImageView("nb9_later")  # no such channel yet
later_view""",
]

# Mean RGB of a square of the canvas (image pixels), centred at fractions (fx, fy).
REGION = """([sel, fx, fy, r]) => {
  const c = document.querySelector(sel);
  const x0 = Math.round(c.width * fx) - r, y0 = Math.round(c.height * fy) - r;
  const d = c.getContext("2d").getImageData(x0, y0, 2 * r, 2 * r).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
  return sum.map(v => v / (d.length / 4));
}"""


def region_rgb(page: Any, selector: str, fx: float, fy: float, radius: int = 8) -> list[float]:
    rgb: list[float] = page.evaluate(REGION, [selector, fx, fy, radius])
    return rgb


def assert_colour(got: list[float], want: tuple[int, int, int], tolerance: float) -> None:
    assert all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True)), (got, want)


def test_image_view_shows_the_published_pixels(lab: dict[str, Any], page: Any) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in PATTERN_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, lab["root"] / PATTERN_NOTEBOOK)
    page.goto(f"{lab['url']}/lab/tree/{PATTERN_NOTEBOOK}?token={lab['token']}&reset")
    status_bar = page.locator("#jp-main-statusbar")
    status_bar.get_by_text(re.compile(r"\(ipykernel\) \| Idle$")).wait_for(timeout=90_000)
    run_menu(page, "Run All Cells")
    pattern = '.shmc-imageview[data-channel="nb9_pattern"] canvas'
    depth = '.shmc-imageview[data-channel="nb9_depth"] canvas'
    later_root = page.locator('.shmc-imageview[data-channel="nb9_later"]')
    later = '.shmc-imageview[data-channel="nb9_later"] canvas'
    for sel in (pattern, depth):
        page.wait_for_function("(sel) => +document.querySelector(sel)?.dataset.frames >= 1",
                               arg=sel, timeout=60_000)  # fmt: skip
    later_root.wait_for(timeout=30_000)
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()

    # JPEG of four flat quadrants: the centre of each is the published colour.
    assert page.evaluate("(s) => [document.querySelector(s).width, "
                         "document.querySelector(s).height]", pattern) == [640, 480]
    assert page.locator(pattern).get_attribute("data-format") == "jpeg"
    quads = [((0.25, 0.25), (255, 0, 0)), ((0.75, 0.25), (0, 255, 0)),
             ((0.25, 0.75), (0, 0, 255)), ((0.75, 0.75), (255, 255, 255))]  # fmt: skip
    for (fx, fy), colour in quads:
        assert_colour(region_rgb(page, pattern, fx, fy), colour, 12)
    # Depth through the gray colormap over (1000, 3000); 0 (no measurement) is black.
    assert page.locator(depth).get_attribute("data-format") == "png"
    assert_colour(region_rgb(page, depth, 0.75, 0.5), (255, 255, 255), 2)
    assert_colour(region_rgb(page, depth, 0.4, 0.5), (0, 0, 0), 2)
    assert_colour(region_rgb(page, depth, 0.12, 0.25, 4), (128, 128, 128), 2)
    assert_colour(region_rgb(page, depth, 0.12, 0.75, 4), (0, 0, 0), 2)
    box = page.locator(depth).bounding_box()  # 160 px wide: all of it shown, at 320 px
    assert box is not None
    assert (box["width"], box["height"]) == (pytest.approx(320, abs=1), pytest.approx(240, abs=1))
    # A channel that does not exist yet: the view says so.
    page.wait_for_function(
        """() => { const r = document.querySelector('.shmc-imageview[data-channel="nb9_later"]');
                   return r.dataset.status === 'waiting'
                          && r.querySelector('.shmc-overlay').textContent.includes('waiting'); }""",
        timeout=15_000,
    )

    kc = kernel_client(lab, PATTERN_NOTEBOOK)
    try:
        # A new frame: the canvas follows, colour for colour.
        run_in_kernel(kc, "pattern.send(quadrants([(0, 0, 0), (255, 255, 0), (0, 255, 255), "
                          "(128, 0, 128)]))")  # fmt: skip
        page.wait_for_function("(sel) => document.querySelector(sel).dataset.seq === '1'",
                               arg=pattern, timeout=15_000)  # fmt: skip
        quads = [((0.25, 0.25), (0, 0, 0)), ((0.75, 0.25), (255, 255, 0)),
                 ((0.25, 0.75), (0, 255, 255)), ((0.75, 0.75), (128, 0, 128))]  # fmt: skip
        for (fx, fy), colour in quads:
            assert_colour(region_rgb(page, pattern, fx, fy), colour, 12)
        # Pause freezes the picture while the channel is still read; Resume shows the newest.
        pattern_root = page.locator('.shmc-imageview[data-channel="nb9_pattern"]')
        pattern_root.locator("button.shmc-pause").click()
        pattern_root.locator('.shmc-badge[data-status="paused"]').wait_for(timeout=10_000)
        read = int(run_in_kernel(kc, "", {"n": "pattern_view.frames_read"})["n"])
        run_in_kernel(kc, "pattern.send(quadrants([(10, 200, 10)] * 4))")
        deadline = time.monotonic() + 10
        while int(run_in_kernel(kc, "", {"n": "pattern_view.frames_read"})["n"]) < read + 1:
            assert time.monotonic() < deadline, "the paused view stopped reading"
        assert page.locator(pattern).get_attribute("data-seq") == "1"  # still the old image
        assert_colour(region_rgb(page, pattern, 0.25, 0.25), (0, 0, 0), 12)
        pattern_root.locator("button.shmc-pause").click()
        page.wait_for_function("(sel) => document.querySelector(sel).dataset.seq === '2'",
                               arg=pattern, timeout=15_000)  # fmt: skip
        assert_colour(region_rgb(page, pattern, 0.25, 0.25), (10, 200, 10), 12)
        # The publisher appears: a small grey image goes raw, exact to the byte.
        run_in_kernel(kc, "later = ArrayPublisher('nb9_later', dtype=np.uint8, shape=(48, 64))\n"
                          "later.send(np.full((48, 64), 200, np.uint8))")  # fmt: skip
        page.wait_for_function(
            """(sel) => { const c = document.querySelector(sel);
                          return +c.dataset.frames >= 1
                                 && c.closest('.shmc-imageview').dataset.status === 'live'; }""",
            arg=later,
            timeout=15_000,
        )
        assert page.locator(later).get_attribute("data-format") == "raw"
        assert_colour(region_rgb(page, later, 0.5, 0.5, 4), (200, 200, 200), 0)
        box = page.locator(later).bounding_box()  # 64 px wide: shown scaled up to 320
        assert box is not None
        assert box["width"] == pytest.approx(320, abs=1)
        page.locator(later).screenshot(path=str(LOGS / "imageview_later.png"))
        # ...and goes away: "publisher gone".
        run_in_kernel(kc, "later.close()")
        later_root.locator('.shmc-badge[data-status="gone"]').wait_for(timeout=15_000)
        assert "publisher gone" in later_root.locator(".shmc-overlay").inner_text()
        page.screenshot(path=str(LOGS / "imageview_check.png"))
        run_in_kernel(kc, "for w in list(ImageView.__subclasses__()) + []: pass\n"
                          "import gc\n"
                          "for obj in gc.get_objects():\n"
                          "    if isinstance(obj, ImageView): obj.close()\n"
                          "pattern.close(); depth.close()")  # fmt: skip
    finally:
        kc.stop_channels()
