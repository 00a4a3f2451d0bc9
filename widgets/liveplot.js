// shm_comm LivePlot front end: a rolling time-series plot drawn on a 2D <canvas>.
//
// Protocol (see shm_comm/widgets/liveplot.py for the Python side):
//   Python -> JS, custom message {type: "frame", frame, reset, status, status_text, labels,
//     t0, tnow, arrays: [{name: "t", dtype: "float32", shape: [k]},
//                        {name: "y", dtype: "float32", shape: [k, m]}]}
//     with one binary buffer per entry of `arrays`. Times are float32 offsets from t0
//     (seconds, float64 in JSON) so that float32 keeps sub-millisecond resolution.
//     reset=true means "this is the whole window": drop what you have.
//     ack=false: sent while a cell runs (paced by time, see shm_comm/widgets/_pacing.py):
//     do not acknowledge.
//   JS -> Python: {type: "ready"} when a view appears (Python answers with a reset frame),
//     {type: "ack", frames: {<widget id>: frame, ...}} after frames have been drawn (Python
//     keeps at most MAX_UNACKED frames per widget unacknowledged, so the browser paces the
//     stream; scheduler.js sends them),
//     {type: "resync"} when a frame number was skipped (a message was lost), which also
//     asks for a reset frame.
//
// Drawing and acknowledging go through the animation-frame loop that all streaming views
// share (scheduler.js, which Python puts in front of this module).
//
// Test hooks on the canvas: data-frames (frames drawn), data-seq (last frame number
// drawn), data-n (samples in the window); data-status and data-channel on the root.

const TYPED = { float32: Float32Array, float64: Float64Array };

function decodeArray(desc, buffer) {
  const Typed = TYPED[desc.dtype];
  if (!Typed) throw new Error(`shm_comm LivePlot: unsupported dtype ${desc.dtype}`);
  // Copy with slice: a typed array needs a byte offset that is a multiple of its element
  // size, and a DataView from the websocket may start anywhere.
  const bytes =
    buffer instanceof ArrayBuffer
      ? buffer
      : buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const out = new Typed(bytes);
  const count = desc.shape.reduce((a, b) => a * b, 1);
  if (out.length !== count) {
    throw new Error(`shm_comm LivePlot: ${desc.name} has ${out.length} items, expected ${count}`);
  }
  return out;
}

function decodeArrays(descs, buffers) {
  const out = {};
  (descs || []).forEach((desc, i) => {
    out[desc.name] = decodeArray(desc, buffers[i]);
  });
  return out;
}

// "Nice" tick step (1, 2, 5 x 10^k) for a range split into about `count` parts.
function niceStep(range, count) {
  if (!(range > 0) || !Number.isFinite(range)) return 1;
  const raw = range / count;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

function decimals(step) {
  return Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
}

function formatValue(v, step) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-4)) return v.toExponential(1);
  return v.toFixed(decimals(step));
}

const MAX_SAMPLES = 2_000_000; // per widget view, all chunks together

function render({ model, el }) {
  const legend = document.createElement("div");
  legend.className = "shmc-legend";
  const ui = channelView(model, {
    kind: "LivePlot",
    className: "shmc-liveplot",
    extras: [legend],
    freezeHint: "Freeze the plot (data keeps being read)",
    onPaused: () => setBadge(),
  });
  const { root, send } = ui;

  const canvas = document.createElement("canvas");
  canvas.className = "shmc-liveplot-canvas";
  canvas.dataset.frames = "0";
  canvas.dataset.seq = "-1";
  canvas.dataset.n = "0";
  root.append(canvas);
  el.append(root);

  // Samples of the rolling window: a list of chunks {t: Float64Array, y: Float32Array, k}.
  let chunks = [];
  let total = 0;
  let labels = [];
  let tnow = NaN;
  let status = "starting";
  let statusText = "starting";
  let lastFrame = -1; // last frame number received
  const acks = acknowledgements();
  let resyncAsked = false;
  let framesDrawn = 0;
  let cssWidth = 0;

  function setBadge() {
    ui.showStatus(status, statusText);
  }

  function setLegend() {
    legend.replaceChildren();
    labels.forEach((label, i) => {
      const item = document.createElement("span");
      item.className = "shmc-legend-item";
      const swatch = document.createElement("span");
      swatch.className = "shmc-swatch";
      swatch.style.background = `var(--shmc-series-${i % 8})`;
      item.append(swatch, document.createTextNode(label));
      legend.append(item);
    });
  }

  function append(t0, dt, y, k, m) {
    if (k === 0) return;
    const t = new Float64Array(k);
    for (let i = 0; i < k; i++) t[i] = t0 + dt[i];
    chunks.push({ t, y, k, m });
    total += k;
  }

  // Drop chunks that are entirely older than the window (with a small margin so the line
  // still enters the plot from the left edge), and cap memory.
  function trim() {
    const oldest = tnow - model.get("window") * 1.05;
    while (chunks.length > 1 && (chunks[0].t[chunks[0].k - 1] < oldest || total > MAX_SAMPLES)) {
      total -= chunks[0].k;
      chunks.shift();
    }
  }

  // Frames wait in a short queue and are applied one per animation frame: messages often
  // arrive in pairs (the websocket is read between two busy animation frames), and drawing
  // each frame on its own frame keeps the motion even instead of skipping every other one.
  // If the queue grows (the browser is slower than the stream), it is applied all at once.
  const queue = [];

  function onMessage(msg, buffers) {
    if (!msg || msg.type !== "frame") return;
    let arrays;
    try {
      arrays = decodeArrays(msg.arrays, buffers || []);
    } catch (err) {
      console.error(err);
      return;
    }
    queue.push([msg, arrays]);
    scheduleDraw();
  }

  function apply(msg, arrays) {
    const newLabels = msg.labels || [];
    const labelsChanged = newLabels.join("\u0000") !== labels.join("\u0000");
    if (msg.reset || labelsChanged) {
      chunks = [];
      total = 0;
      resyncAsked = false;
    } else if (lastFrame >= 0 && msg.frame !== lastFrame + 1 && !resyncAsked) {
      resyncAsked = true; // a frame was lost on the way: ask for the whole window again
      send({ type: "resync", frame: msg.frame });
    }
    if (labelsChanged) {
      labels = newLabels;
      setLegend();
    }
    lastFrame = msg.frame;
    acks.applied(msg);
    status = msg.status || status;
    statusText = msg.status_text || status;
    setBadge();
    if (arrays.t && arrays.y) {
      const k = arrays.t.length;
      const m = labels.length;
      if (m > 0 && arrays.y.length === k * m) append(msg.t0, arrays.t, arrays.y, k, m);
    }
    if (Number.isFinite(msg.tnow)) tnow = msg.tnow;
    trim();
  }

  let needsDraw = false;
  const scheduler = sharedScheduler();
  const view = {
    group: model.widget_manager || {},
    send,
    dirty: () => needsDraw || queue.length > 0,
    // Apply the next frame (all of them if the queue is long) and draw; returns the
    // acknowledgement [widget id, frame] to send, if any.
    step: () => {
      needsDraw = false;
      const take = queue.length > 3 ? queue.length : Math.min(1, queue.length);
      for (const [msg, arrays] of queue.splice(0, take)) apply(msg, arrays);
      draw();
      return acks.due();
    },
  };
  scheduler.add(view);

  function scheduleDraw() {
    needsDraw = true;
    scheduler.request();
  }

  function resize() {
    const w = Math.max(200, Math.floor(root.clientWidth || 600));
    const h = Math.max(80, model.get("height") || 240);
    const dpr = window.devicePixelRatio || 1;
    if (w === cssWidth && canvas.height === Math.round(h * dpr)) return;
    cssWidth = w;
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    scheduleDraw();
  }

  // Theme colours, re-read at most once a second (a theme switch shows within a second).
  let colors = null;
  let colorsAt = -Infinity;
  function themeColors() {
    const now = performance.now();
    if (colors && now - colorsAt < 1000) return colors;
    colorsAt = now;
    const style = getComputedStyle(root);
    const get = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    colors = {
      fg: get("--shmc-fg", "#222"),
      muted: get("--shmc-muted", "#777"),
      grid: get("--shmc-grid", "#ddd"),
      bg: get("--shmc-bg", "#fff"),
      font: get("--shmc-font", "sans-serif"),
      series: Array.from({ length: 8 }, (_, i) => get(`--shmc-series-${i}`, "#1f77b4")),
    };
    return colors;
  }

  // The static layer (background, grid, ticks, labels, frame) is drawn into an offscreen
  // canvas and only redrawn when what it shows changes; each frame copies it with one
  // drawImage. Without a GPU, rasterising ~25 text labels every frame is a large part of
  // the cost of a frame.
  const axesCanvas = document.createElement("canvas");
  let axesKey = "";

  function drawAxes(c, dpr, W, H, box, lo, hi, windowS) {
    const key = [W, H, dpr, lo, hi, windowS, model.get("y_label"), c.fg, c.muted, c.grid, c.bg,
      c.font].join("|");
    if (key === axesKey) return;
    axesKey = key;
    axesCanvas.width = canvas.width;
    axesCanvas.height = canvas.height;
    const ctx = axesCanvas.getContext("2d");
    const { left, top, pw, ph } = box;
    const X = (r) => left + ((r + windowS) / windowS) * pw; // r: seconds relative to newest
    const Y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = c.bg;
    ctx.fillRect(0, 0, W, H);
    ctx.font = `11px ${c.font}`;
    ctx.lineWidth = 1;
    ctx.strokeStyle = c.grid;
    ctx.fillStyle = c.muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const ystep = niceStep(hi - lo, 5);
    for (let v = Math.ceil(lo / ystep) * ystep; v <= hi + ystep * 1e-6; v += ystep) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + pw, y);
      ctx.stroke();
      ctx.fillText(formatValue(Math.abs(v) < ystep * 1e-9 ? 0 : v, ystep), left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const xstep = niceStep(windowS, 6);
    for (let r = 0; r >= -windowS - 1e-9; r -= xstep) {
      const x = Math.round(X(r)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + ph);
      ctx.stroke();
      ctx.fillText(r === 0 ? "0" : (-Math.abs(r)).toFixed(decimals(xstep)), x, top + ph + 4);
    }
    ctx.fillText("time (s) relative to newest sample", left + pw / 2, top + ph + 19);
    const yLabel = model.get("y_label");
    if (yLabel) {
      ctx.save();
      ctx.translate(12, top + ph / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = "middle";
      ctx.fillText(yLabel, 0, 0);
      ctx.restore();
    }
    ctx.strokeStyle = c.fg;
    ctx.strokeRect(left + 0.5, top + 0.5, pw, ph);
  }

  function draw() {
    const c = themeColors();
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.width / dpr;
    const H = canvas.height / dpr;
    const ctx = canvas.getContext("2d");

    const left = 60;
    const right = 12;
    const top = 10;
    const bottom = 36;
    const pw = Math.max(10, W - left - right);
    const ph = Math.max(10, H - top - bottom);
    const windowS = model.get("window");
    const x1 = Number.isFinite(tnow) ? tnow : 0;
    const x0 = x1 - windowS;
    const X = (t) => left + ((t - x0) / windowS) * pw;

    // Y range: fixed, or autoscaled to the visible samples (NaNs ignored), widened to
    // whole tick steps so the axis does not jitter with every frame.
    const m = labels.length;
    let lo = Infinity;
    let hi = -Infinity;
    let nVisible = 0;
    for (const ch of chunks) {
      for (let i = 0; i < ch.k; i++) {
        if (ch.t[i] < x0) continue;
        if (m > 0) nVisible++;
        for (let s = 0; s < m; s++) {
          const v = ch.y[i * m + s];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
    }
    const fixed = model.get("y_range") || [];
    if (fixed.length === 2 && fixed[0] < fixed[1]) {
      lo = fixed[0];
      hi = fixed[1];
    } else if (!(lo <= hi)) {
      lo = -1;
      hi = 1;
    } else {
      if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
        const d = Math.abs(hi) > 0 ? Math.abs(hi) * 0.1 : 1;
        lo -= d;
        hi += d;
      }
      const pad = (hi - lo) * 0.05;
      lo -= pad;
      hi += pad;
      const step = niceStep(hi - lo, 5);
      lo = Math.floor(lo / step) * step;
      hi = Math.ceil(hi / step) * step;
    }
    const Y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;

    drawAxes(c, dpr, W, H, { left, top, pw, ph }, lo, hi, windowS);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(axesCanvas, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);

    // Series, clipped to the plot area. Samples that fall in the same pixel column are
    // reduced to first/min/max/last, so the cost is bounded by the width, not the rate. A
    // dense column is filled as one thin rectangle (joined to the previous column) and
    // sparse stretches are stroked in short paths: with software rendering (no GPU), one
    // long anti-aliased path of thousands of zig-zag vertices costs ~30 ms per frame, this
    // ~2 ms. A NaN lifts the pen: the line shows a gap.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, pw, ph);
    ctx.clip();
    const lw = 1.25;
    ctx.lineWidth = lw;
    ctx.lineJoin = "round";
    for (let s = 0; s < m; s++) {
      const seriesColor = c.series[s % 8];
      ctx.strokeStyle = seriesColor;
      ctx.fillStyle = seriesColor;
      ctx.beginPath();
      let prev = NaN; // last value drawn, NaN when the pen is up
      let prevCol = NaN;
      let col = NaN;
      let n = 0;
      let first = 0;
      let vmin = 0;
      let vmax = 0;
      let last = 0;
      let vertices = 0;
      const flush = () => {
        if (n === 0) return;
        const adjacent = prev === prev && col - prevCol <= 1;
        if (n > 1 && (adjacent || prev !== prev)) {
          // The rectangle also spans the previous column's last value: that is the join.
          const a = adjacent ? Math.min(vmin, prev) : vmin;
          const b = adjacent ? Math.max(vmax, prev) : vmax;
          const yb = Y(b);
          ctx.fillRect(col - lw / 2, yb - lw / 2, lw, Y(a) - yb + lw);
          ctx.moveTo(col, Y(last));
        } else {
          if (prev === prev) ctx.lineTo(col, Y(first));
          else ctx.moveTo(col, Y(first));
          if (n > 1) {
            const yb = Y(vmax);
            ctx.fillRect(col - lw / 2, yb - lw / 2, lw, Y(vmin) - yb + lw);
            ctx.moveTo(col, Y(last));
          }
          if (++vertices >= 256) {
            ctx.stroke();
            ctx.beginPath();
            ctx.moveTo(col, Y(last));
            vertices = 0;
          }
        }
        prev = last;
        prevCol = col;
        n = 0;
      };
      for (const ch of chunks) {
        for (let i = 0; i < ch.k; i++) {
          const v = ch.y[i * m + s];
          if (v !== v) {
            flush();
            prev = NaN;
            col = NaN;
            continue;
          }
          const px = Math.round(X(ch.t[i]));
          if (px !== col) {
            flush();
            col = px;
            first = vmin = vmax = last = v;
            n = 1;
          } else {
            if (v < vmin) vmin = v;
            if (v > vmax) vmax = v;
            last = v;
            n++;
          }
        }
      }
      flush();
      ctx.stroke();
    }
    ctx.restore();

    if (nVisible === 0) {
      ctx.fillStyle = c.muted;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = `13px ${c.font}`;
      const text =
        status === "waiting"
          ? `waiting for publisher on "${model.get("channel")}"\u2026`
          : statusText || "no data";
      ctx.fillText(text, left + pw / 2, top + ph / 2);
    }

    framesDrawn += 1;
    canvas.dataset.frames = String(framesDrawn);
    canvas.dataset.seq = String(lastFrame);
    canvas.dataset.n = String(nVisible);
  }

  const onLayout = () => {
    resize();
    scheduleDraw();
  };
  model.on("msg:custom", onMessage);
  model.on("change:height", onLayout);
  model.on("change:window", onLayout);
  model.on("change:y_range", onLayout);
  model.on("change:y_label", onLayout);

  const observer = new ResizeObserver(() => resize());
  observer.observe(root);
  ui.start();
  resize();
  scheduleDraw();
  send({ type: "ready" });

  return () => {
    scheduler.remove(view);
    observer.disconnect();
    ui.dispose();
    model.off("msg:custom", onMessage);
    model.off("change:height", onLayout);
    model.off("change:window", onLayout);
    model.off("change:y_range", onLayout);
    model.off("change:y_label", onLayout);
  };
}

export default { render };
