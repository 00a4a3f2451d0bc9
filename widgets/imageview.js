// shm_comm ImageView front end: the newest image of a channel on a <canvas>.
//
// Protocol (see ImageView in shm_comm/widgets/imageview.py):
//   Python -> JS, custom message {type: "frame", id, frame, ack, status, status_text,
//     dropped, image} and, when image is true, {format: "jpeg" | "png" | "raw", width,
//     height, channels, src_width, src_height, stamp, sent, seq, bytes[, vrange, colormap]}
//     with the encoded image as the one binary buffer (raw: `channels` bytes per pixel,
//     row-major). stamp: the publisher's time stamp, sent: the kernel's time when sending
//     (seconds since the epoch). ack=false: sent while a cell runs, acknowledge nothing.
//   JS -> Python: {type: "ready", width} when a view appears, {type: "view", width} when
//     the width available changes (device pixels: Python downscales wider images), and the
//     shared acknowledgements {type: "ack", frames: {<widget id>: frame}} (scheduler.js).
//
// Newer images matter more, but the page should show every image it can: images arrive
// bunched (the kernel-to-browser path delivers two within one animation frame now and then),
// so up to MAX_QUEUED wait to be decoded and up to MAX_QUEUED decoded ones wait to be drawn,
// one per animation frame (a bunched image is shown one refresh late, instead of never).
// Beyond that the oldest gives way (counted in the badge's drops), so a slow page never
// queues images up.
//
// Test hooks on the canvas: data-frames (images drawn), data-seq (publisher sequence number
// of the image shown), data-frame (widget frame number), data-format, data-bytes,
// data-age-ms; data-status and data-channel on the root.

function fmtAge(seconds) {
  if (!Number.isFinite(seconds)) return "\u2014";
  if (seconds < 1) return `${Math.max(0, seconds * 1000).toFixed(0)} ms`;
  return `${seconds.toFixed(1)} s`;
}

function fmtBytes(n) {
  if (!(n >= 0)) return "";
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1000).toFixed(0)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

// Raw pixels (1, 3 or 4 bytes each) -> ImageData (RGBA).
function rawImageData(buffer, width, height, channels) {
  const src = new Uint8Array(buffer.buffer || buffer, buffer.byteOffset || 0,
                             buffer.byteLength);
  const out = new ImageData(width, height);
  const dst = out.data;
  const n = width * height;
  if (src.length < n * channels) throw new Error("shm_comm ImageView: short raw image");
  if (channels === 4) {
    dst.set(src.subarray(0, n * 4));
  } else {
    for (let i = 0, j = 0, k = 0; i < n; i++, k += 4) {
      if (channels === 3) {
        dst[k] = src[j++];
        dst[k + 1] = src[j++];
        dst[k + 2] = src[j++];
      } else {
        dst[k] = dst[k + 1] = dst[k + 2] = src[j++];
      }
      dst[k + 3] = 255;
    }
  }
  return out;
}

const MIN_WIDTH = 320; // CSS pixels: smaller images are scaled up to this
const MAX_QUEUED = 2; // images waiting to be decoded, and decoded ones waiting to be drawn

function closePicture(picture) {
  if (picture.close) picture.close(); // an ImageBitmap (raw images are ImageData)
}

function render({ model, el }) {
  const info = document.createElement("span");
  info.className = "shmc-info";
  const ui = channelView(model, {
    kind: "ImageView",
    className: "shmc-imageview shmc-empty",
    extras: [info],
    freezeHint: "Freeze the picture",
    onPaused: () => {
      statusDirty = true;
      scheduler.request();
    },
  });
  const { root, send } = ui;

  const stage = document.createElement("div");
  stage.className = "shmc-stage";
  const canvas = document.createElement("canvas");
  canvas.className = "shmc-imageview-canvas";
  canvas.width = 320;
  canvas.height = 240;
  canvas.dataset.frames = "0";
  canvas.dataset.seq = "-1";
  canvas.dataset.frame = "-1";
  const overlay = document.createElement("div");
  overlay.className = "shmc-overlay";
  const stats = document.createElement("div");
  stats.className = "shmc-image-stats";
  stage.append(canvas, overlay, stats);
  root.append(stage);
  el.append(root);

  let status = "starting";
  let statusText = "starting";
  let hasImage = false;
  const acks = acknowledgements();
  let framesDrawn = 0;
  let replaced = 0; // images that gave way to newer ones before they were drawn
  let dropped = 0; // published images Python never sent (it sends the newest only)
  let shownMeta = null;
  const drawTimes = []; // performance.now() of recent draws, for the frame rate

  const waiting = []; // [msg, buffer] received, not decoded yet (oldest first)
  let decoding = false;
  const ready = []; // {msg, picture: bitmap | imageData} decoded, one drawn per animation frame
  let statusDirty = true;

  function showStatus() {
    ui.showStatus(status, statusText);
    root.classList.toggle("shmc-gone", status === "gone" || status === "stopped");
    let text = "";
    if (status === "waiting") text = `waiting for publisher on "${model.get("channel")}"\u2026`;
    else if (status === "gone") text = "publisher gone";
    else if (status === "error") text = statusText;
    else if (!hasImage && status !== "starting") text = statusText || "no image yet";
    setText(overlay, text);
    overlay.hidden = text === "";
  }

  function showStats() {
    const now = performance.now();
    while (drawTimes.length && now - drawTimes[0] > 2000) drawTimes.shift();
    // Images drawn over the last two seconds (or since the first one, if that is later).
    const since = drawTimes.length ? Math.min(2000, now - drawTimes[0]) / 1000 : 0;
    const fps = since > 0.25 ? (drawTimes.length - 1) / since : 0;
    if (!shownMeta) {
      setText(info, "");
      setText(stats, "");
      return;
    }
    const m = shownMeta;
    // Frame age from the publisher's clock. The clocks are taken to agree (the same
    // machine's) when the image arrived less than a second after the kernel sent it by our
    // clock; otherwise only the kernel's part of the age is known.
    const nowS = Date.now() / 1000;
    const sameClock = m.sameClock;
    const age = sameClock ? nowS - m.stamp : m.sent - m.stamp;
    canvas.dataset.ageMs = String(Math.round(age * 1000));
    canvas.dataset.fps = fps.toFixed(1);
    const drops = dropped + replaced;
    setText(stats, `${fps.toFixed(1)} fps \u00b7 ${sameClock ? "" : "\u2265"}${fmtAge(age)}` +
      ` \u00b7 ${drops} drop${drops === 1 ? "" : "s"}`);
    let text = `${m.src_width}\u00d7${m.src_height}`;
    if (m.width !== m.src_width) text += ` \u2192 ${m.width}\u00d7${m.height}`;
    text += ` ${m.format} ${fmtBytes(m.bytes)}`;
    if (m.vrange) text += ` \u00b7 ${m.colormap} ${m.vrange[0].toPrecision(4)}\u2026${m.vrange[1].toPrecision(4)}`;
    setText(info, text);
  }

  function onMessage(msg, buffers) {
    if (!msg || msg.type !== "frame") return;
    if (msg.image && buffers && buffers.length) {
      msg.sameClock = Math.abs(Date.now() / 1000 - msg.sent) < 1.0;
      waiting.push([msg, buffers[0]]);
      if (waiting.length > MAX_QUEUED) {
        waiting.shift(); // never decoded: the newer ones win
        replaced++;
      }
      decodeNext();
    } else {
      applyStatus(msg);
    }
  }

  function applyStatus(msg) {
    acks.applied(msg);
    status = msg.status || status;
    statusText = msg.status_text || status;
    if (Number.isFinite(msg.dropped)) dropped = msg.dropped;
    statusDirty = true;
    scheduler.request();
  }

  async function decodeNext() {
    if (decoding || !waiting.length) return;
    decoding = true;
    const [msg, buffer] = waiting.shift();
    try {
      let picture;
      if (msg.format === "raw") {
        picture = rawImageData(buffer, msg.width, msg.height, msg.channels);
      } else {
        const bytes = buffer.buffer
          ? new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
          : new Uint8Array(buffer);
        picture = await createImageBitmap(new Blob([bytes], { type: `image/${msg.format}` }));
      }
      ready.push({ msg, picture });
      if (ready.length > MAX_QUEUED) {
        closePicture(ready.shift().picture); // decoded, never drawn
        replaced++;
      }
    } catch (err) {
      console.error("shm_comm ImageView: cannot decode image", err);
      applyStatus(msg); // still acknowledge it
    }
    decoding = false;
    scheduler.request();
    if (waiting.length) decodeNext();
  }

  function draw() {
    const { msg, picture } = ready.shift();
    if (canvas.width !== msg.width || canvas.height !== msg.height) {
      canvas.width = msg.width;
      canvas.height = msg.height;
    }
    const ctx = canvas.getContext("2d");
    if (picture instanceof ImageData) {
      ctx.putImageData(picture, 0, 0);
    } else {
      ctx.drawImage(picture, 0, 0);
      picture.close();
    }
    hasImage = true;
    root.classList.remove("shmc-empty");
    shownMeta = msg;
    applyWidth();
    framesDrawn++;
    drawTimes.push(performance.now());
    applyStatus(msg);
    setData(canvas, "frames", String(framesDrawn));
    setData(canvas, "seq", String(msg.seq));
    setData(canvas, "frame", String(msg.frame));
    setData(canvas, "format", msg.format);
    setData(canvas, "bytes", String(msg.bytes));
  }

  const scheduler = sharedScheduler();
  let lastStatsAt = 0;
  const view = {
    group: model.widget_manager || {},
    send,
    dirty: () => ready.length > 0 || statusDirty,
    step: () => {
      if (ready.length) draw();
      if (statusDirty) {
        statusDirty = false;
        showStatus();
      }
      const now = performance.now();
      if (now - lastStatsAt > 250) {
        lastStatsAt = now;
        showStats();
      }
      return acks.due();
    },
  };
  scheduler.add(view);

  // The width the view can show, in device pixels: Python downscales wider images.
  let sentWidth = 0;
  function viewWidth() {
    const dpr = window.devicePixelRatio || 1;
    const limit = model.get("width") || Infinity;
    const css = Math.min(limit, Math.floor(root.clientWidth || 0));
    return css > 0 ? Math.round(css * dpr) : 0;
  }
  // The CSS width of the picture: the `width` trait if set; else the source image's own
  // width (downscaled frames fill the same space), small images scaled up to MIN_WIDTH with
  // their pixels kept sharp; never wider than the notebook (max-width in the CSS).
  function applyWidth() {
    const limit = model.get("width");
    let width = "";
    let small = false;
    if (limit) {
      width = `${limit}px`;
    } else if (shownMeta !== null) {
      small = shownMeta.src_width < MIN_WIDTH;
      width = `${Math.max(MIN_WIDTH, shownMeta.src_width)}px`;
    }
    if (stage.style.width !== width) stage.style.width = width;
    const rendering = small ? "pixelated" : "";
    if (canvas.style.imageRendering !== rendering) canvas.style.imageRendering = rendering;
  }

  function onResize() {
    applyWidth();
    const w = viewWidth();
    if (w > 0 && Math.abs(w - sentWidth) > Math.max(16, sentWidth * 0.1)) {
      sentWidth = w;
      send({ type: "view", width: w });
    }
  }

  // The frame rate, age and drops go stale when nothing arrives: refresh them now and then.
  const statsTimer = setInterval(() => {
    showStats();
  }, 500);

  model.on("msg:custom", onMessage);
  model.on("change:width", onResize);
  const observer = new ResizeObserver(() => onResize());
  observer.observe(root);
  ui.start();
  onResize();
  sentWidth = viewWidth();
  send({ type: "ready", width: sentWidth });

  return () => {
    scheduler.remove(view);
    observer.disconnect();
    clearInterval(statsTimer);
    for (const { picture } of ready.splice(0)) closePicture(picture);
    ui.dispose();
    model.off("msg:custom", onMessage);
    model.off("change:width", onResize);
  };
}

export default { render };
