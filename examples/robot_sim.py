"""A simulated robot that publishes realistic sensor streams over shm_comm.

    python examples/robot_sim.py                      # imu, joints and camera until Ctrl-C
    python examples/robot_sim.py --duration 30 --channels imu,joints
    python examples/robot_sim.py --rate-scale 0.1     # a tenth of every rate (slow machines)
    python examples/robot_sim.py --camera-size 640x480

Channels (typed NumPy channels, one message per sample):

======== ======= ==========================================================================
channel  rate    message
======== ======= ==========================================================================
joints   500 Hz  one record of JOINTS_DTYPE: ``t`` (float64, seconds since the epoch), ``q``
                 (6 joint angles, rad) and ``dq`` (6 joint velocities, rad/s), float32
imu      1 kHz   one record of IMU_DTYPE: ``t``, accelerations ``ax ay az`` (m/s^2, gravity
                 on z) and angular rates ``gx gy gz`` (rad/s), float32
camera   30 Hz   a 240x320x3 uint8 RGB image (``--camera-size WxH``), written in place with
                 ``loan()``: a scrolling colour scene, a bouncing ball and the time stamp
======== ======= ==========================================================================

With ``--glitch-every SECONDS`` the IMU's accelerometer reports NaN for 0.1 s every SECONDS
(a sensor dropout), to show how consumers cope with gaps.

``t`` is the sample's scheduled time: samples are paced by a deadline loop (sleep until the
next deadline, never "sleep one period"), so rates do not drift and ``t`` is evenly spaced.
If the process falls behind (a busy machine) it publishes the missed samples late, up to
0.1 s worth, and skips the rest.

When every channel exists it prints one line ``ready <channel> ...`` on stdout, so notebooks
and tests can wait for that line instead of sleeping. It exits cleanly on Ctrl-C, SIGTERM,
after ``--duration`` seconds, or (with ``--exit-with-parent``) when the process that started
it is gone: the publishers are closed, which removes their shared-memory segments.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np

from shm_comm import ArrayPublisher

JOINTS_DTYPE = np.dtype([("t", "f8"), ("q", "f4", (6,)), ("dq", "f4", (6,))])
IMU_DTYPE = np.dtype(
    [("t", "f8"), ("ax", "f4"), ("ay", "f4"), ("az", "f4"),
     ("gx", "f4"), ("gy", "f4"), ("gz", "f4")]
)  # fmt: skip
CAMERA_SHAPE = (240, 320, 3)  # the default; --camera-size changes it
CHANNELS = ("joints", "imu", "camera")
RATES = {"joints": 500.0, "imu": 1000.0, "camera": 30.0}
MAX_CATCH_UP = 0.1  # seconds of missed samples published late; older ones are skipped
GLITCH_LENGTH = 0.1  # seconds of NaN accelerometer samples per glitch (--glitch-every)
PARENT_CHECK = 0.5  # seconds between checks that the parent process still exists


@dataclass
class Stream:
    """One channel: its publisher, its period and the deadline of its next sample."""

    name: str
    period: float
    publish: Callable[[float], None]
    publisher: ArrayPublisher
    next_deadline: float = 0.0
    sent: int = 0
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Robot:
    """A 6-DOF arm moving along smooth joint trajectories, with an IMU and a camera."""

    def __init__(self, seed: int = 0, glitch_every: float = 0.0,
                 camera_shape: tuple[int, int, int] = CAMERA_SHAPE) -> None:  # fmt: skip
        self.glitch_every = glitch_every
        self.rng = np.random.default_rng(seed)
        self.amplitude = np.array([0.8, 0.6, 0.5, 1.0, 0.7, 1.2], dtype=np.float64)
        self.frequency = np.array([0.20, 0.15, 0.30, 0.25, 0.40, 0.35], dtype=np.float64)
        self.phase = self.rng.uniform(0, 2 * np.pi, 6)
        self._noise = self.rng.standard_normal((4096, 12)).astype(np.float32)
        self._noise_index = 0
        self.camera_shape = camera_shape
        height, width = camera_shape[:2]
        ramp = np.linspace(0, 255, 2 * width, dtype=np.float32)
        rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
        self._scene = np.empty((height, 2 * width, 3), dtype=np.uint8)
        self._scene[..., 0] = ramp[None, :] * (1 - rows)
        self._scene[..., 1] = (np.sin(ramp / 20.0)[None, :] * 0.5 + 0.5) * 255 * rows
        self._scene[..., 2] = 255 - ramp[None, :] * 0.5
        self._radius = max(4, height // 10)
        yy, xx = np.mgrid[-self._radius : self._radius + 1, -self._radius : self._radius + 1]
        self._disk = xx**2 + yy**2 <= self._radius**2
        self._scale = max(1, height // 120)  # text: 5x7 glyphs, this many pixels per dot

    def noise(self) -> np.ndarray:
        """12 standard-normal numbers (a cheap cycle over a pre-drawn table)."""
        self._noise_index = (self._noise_index + 1) % self._noise.shape[0]
        return self._noise[self._noise_index]

    def joints(self, t: float, out: np.ndarray) -> None:
        """Fill a JOINTS_DTYPE record for time ``t`` (seconds)."""
        w = 2 * np.pi * self.frequency
        angle = w * t + self.phase
        n = self.noise()
        out["t"] = t
        out["q"] = self.amplitude * np.sin(angle) + 0.001 * n[:6]
        out["dq"] = self.amplitude * w * np.cos(angle) + 0.01 * n[6:]

    def imu(self, t: float, out: np.ndarray) -> None:
        """Fill an IMU_DTYPE record: body motion, gravity, a 35 Hz motor vibration, noise."""
        n = self.noise()
        vibration = 0.15 * np.sin(2 * np.pi * 35.0 * t)
        out["t"] = t
        out["ax"] = 0.6 * np.sin(2 * np.pi * 0.5 * t) + vibration + 0.05 * n[0]
        out["ay"] = 0.4 * np.cos(2 * np.pi * 0.3 * t) + 0.05 * n[1]
        out["az"] = 9.81 + 0.3 * np.sin(2 * np.pi * 1.1 * t) + vibration + 0.05 * n[2]
        out["gx"] = 0.2 * np.sin(2 * np.pi * 0.4 * t) + 0.01 * n[3]
        out["gy"] = 0.1 * np.cos(2 * np.pi * 0.2 * t) + 0.01 * n[4]
        out["gz"] = 0.3 * np.sin(2 * np.pi * 0.25 * t) + 0.01 * n[5]
        if self.glitch_every and t % self.glitch_every < GLITCH_LENGTH:
            for name in ("ax", "ay", "az"):
                out[name] = np.nan  # the accelerometer drops out: plots show a gap

    def camera(self, t: float, out: np.ndarray, frame: int = 0) -> None:
        """Fill an image: a scene scrolling by 40 pixels per second, a white ball bouncing
        across it, and the time stamp (UTC) and frame number at the bottom left."""
        height, width = self.camera_shape[:2]
        offset = int(t * 40.0) % width
        out[...] = self._scene[:, offset : offset + width]
        r = self._radius
        # The ball: a triangle wave in x and y, so it bounces off the edges.
        x = r + int(abs((t * 0.37 % 2.0) - 1.0) * (width - 2 * r - 1))
        y = r + int(abs((t * 0.53 % 2.0) - 1.0) * (height - 2 * r - 1))
        out[y - r : y + r + 1, x - r : x + r + 1][self._disk] = 255
        stamp = time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
        draw_text(out, f"{stamp} #{frame}", 4 * self._scale, height - 11 * self._scale,
                  self._scale)  # fmt: skip


# 5x7 dot glyphs for the camera's time stamp (one string of 7 rows of 5 dots per character).
GLYPHS = {
    "0": "01110100011001110101110011000101110", "1": "00100011000010000100001000010001110",
    "2": "01110100010000100010001000100011111", "3": "11111000100010000010000011000101110",
    "4": "00010001100101010010111110001000010", "5": "11111100001111000001000011000101110",
    "6": "00110010001000011110100011000101110", "7": "11111000010001000100010000100001000",
    "8": "01110100011000101110100011000101110", "9": "01110100011000101111000010001001100",
    ":": "00000011000110000000011000110000000", ".": "00000000000000000000000000110001100",
    "#": "01010010101111101010111110101001010", " ": "0" * 35,
}  # fmt: skip
_GLYPH_MASKS = {c: np.array([d == "1" for d in g]).reshape(7, 5) for c, g in GLYPHS.items()}


def draw_text(image: np.ndarray, text: str, x: int, y: int, scale: int) -> None:
    """White text on a black box into an (H, W, 3) image, top-left at (x, y); clipped."""
    box = image[max(0, y - scale) : y + 8 * scale, max(0, x - scale) : x + 6 * scale * len(text)]
    box[...] = 0
    for i, char in enumerate(text):
        mask = _GLYPH_MASKS.get(char)
        if mask is None:
            continue
        big = np.kron(mask, np.ones((scale, scale), dtype=bool))
        x0 = x + 6 * scale * i
        region = image[y : y + big.shape[0], x0 : x0 + big.shape[1]]
        region[big[: region.shape[0], : region.shape[1]]] = 255


def make_streams(names: Sequence[str], rate_scale: float, robot: Robot,
                 clock: Callable[[float], float]) -> list[Stream]:  # fmt: skip
    """Create the publishers (closing those already made if one fails)."""
    streams: list[Stream] = []
    try:
        for name in names:
            period = 1.0 / (RATES[name] * rate_scale)
            if name == "camera":
                cam = ArrayPublisher(name, dtype=np.uint8, shape=robot.camera_shape,
                                     num_slots=8)  # fmt: skip
                frames = itertools.count()

                def publish_camera(deadline: float, cam: ArrayPublisher = cam,
                                   frames: Iterator[int] = frames) -> None:  # fmt: skip
                    with cam.loan() as out:  # zero-copy: draw straight into shared memory
                        robot.camera(clock(deadline), out, next(frames))

                streams.append(Stream(name, period, publish_camera, cam))
            else:
                dtype = IMU_DTYPE if name == "imu" else JOINTS_DTYPE
                fill = robot.imu if name == "imu" else robot.joints
                pub = ArrayPublisher(name, dtype=dtype, shape=(), num_slots=1024)
                record = np.zeros((), dtype=dtype)

                def publish_record(
                    deadline: float,
                    pub: ArrayPublisher = pub,
                    record: np.ndarray = record,
                    fill: Callable[[float, np.ndarray], None] = fill,
                ) -> None:
                    fill(clock(deadline), record)
                    pub.send(record)

                streams.append(Stream(name, period, publish_record, pub))
    except BaseException:
        for s in streams:
            s.publisher.close()
        raise
    return streams


def run(streams: list[Stream], duration: float | None, stop: Callable[[], bool],
        start: float) -> None:  # fmt: skip
    """The deadline loop: publish every due sample, then sleep until the next deadline."""
    for s in streams:
        s.next_deadline = start
    end = start + duration if duration else float("inf")
    while not stop():
        now = time.monotonic()
        if now >= end:
            return
        for s in streams:
            while s.next_deadline <= now:
                if now - s.next_deadline > MAX_CATCH_UP:
                    missed = int((now - s.next_deadline) / s.period)
                    s.next_deadline += missed * s.period
                    s.skipped += missed
                    continue
                s.publish(s.next_deadline)
                s.sent += 1
                s.next_deadline += s.period
        delay = min(min(s.next_deadline for s in streams), end) - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--channels", default=",".join(CHANNELS),
                   help="comma-separated subset of: joints,imu,camera (default: all)")  # fmt: skip
    p.add_argument("--rate-scale", type=float, default=1.0,
                   help="multiply every rate by this factor (default 1.0)")  # fmt: skip
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (default 0: run until stopped)")  # fmt: skip
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the process that started this one is gone")  # fmt: skip
    p.add_argument("--glitch-every", type=float, default=0.0, metavar="SECONDS",
                   help="every SECONDS, the IMU accelerometer reports NaN for 0.1 s (default: "
                        "never)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed for the sensor noise")
    p.add_argument("--camera-size", default=f"{CAMERA_SHAPE[1]}x{CAMERA_SHAPE[0]}",
                   metavar="WxH", help="camera image size (default %(default)s)")  # fmt: skip
    args = p.parse_args(argv)
    names = [n.strip() for n in args.channels.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CHANNELS))
    if unknown or not names:
        p.error(f"unknown channel(s) {unknown}; choose from {', '.join(CHANNELS)}")
    if len(set(names)) != len(names):
        p.error("a channel is listed twice")
    if not 0 < args.rate_scale <= 100:
        p.error("--rate-scale must be in (0, 100]")
    if args.duration < 0:
        p.error("--duration must be >= 0")
    if args.glitch_every < 0:
        p.error("--glitch-every must be >= 0")
    try:
        cam_width, cam_height = (int(v) for v in args.camera_size.lower().split("x"))
    except ValueError:
        p.error(f"--camera-size must look like 640x480, got {args.camera_size!r}")
    if not (64 <= cam_width <= 4096 and 48 <= cam_height <= 4096):
        p.error("--camera-size must be between 64x48 and 4096x4096")
    args.camera_shape = (cam_height, cam_width, 3)
    args.names = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; returns the process exit status."""
    args = parse_args(argv)
    stopping: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    next_parent_check = [0.0]

    def stop() -> bool:
        if stopping:
            return True
        if args.exit_with_parent:
            now = time.monotonic()
            if now >= next_parent_check[0]:
                next_parent_check[0] = now + PARENT_CHECK
                if os.getppid() != parent:
                    stopping.append("parent exited")
        return bool(stopping)

    start_mono = time.monotonic()
    start_wall = time.time()

    def clock(deadline: float) -> float:
        # The wall-clock time of a deadline: evenly spaced, no drift, no jitter.
        return start_wall + (deadline - start_mono)

    robot = Robot(args.seed, args.glitch_every, args.camera_shape)
    streams = make_streams(args.names, args.rate_scale, robot, clock)
    try:
        print("ready " + " ".join(args.names), flush=True)
        run(streams, args.duration, stop, start_mono)
    finally:
        for s in streams:
            s.publisher.close()  # removes the segment
        elapsed = time.monotonic() - start_mono
        summary = ", ".join(
            f"{s.name} {s.sent} msgs ({s.sent / max(elapsed, 1e-9):.0f}/s, {s.skipped} skipped)"
            for s in streams
        )
        reason = stopping[0] if stopping else "duration reached"
        print(f"robot_sim stopped ({reason}) after {elapsed:.1f} s: {summary}",
              file=sys.stderr, flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
