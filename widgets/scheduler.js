// shm_comm widgets: one animation-frame loop shared by every streaming view on the page
// (LivePlot, ImageView). Python prepends this file to each widget's ES module.
//
// All views with something new are drawn in the same animation frame, and their
// acknowledgements leave in ONE message per kernel (widget manager), on one of those
// views' comms: Python routes them by widget id. Every comm message makes the kernel
// publish busy/idle, and JupyterLab updates its kernel indicators for each, so per-view
// acks would cost the page more than drawing. Drawing waits for nothing else: the next
// animation frame after a frame arrives, since the round trip (send, draw, acknowledge) is
// what paces the stream. The loop is kept on window, so that it is shared even though each
// widget module is loaded on its own.
//
// A view is {group, send(msg), dirty(), step()}: step() draws and returns the
// acknowledgement [widget id, frame] to send, or null.

// Acknowledgements leave at most every ACK_INTERVAL ms per kernel: each one costs the page a
// busy/idle round of JupyterLab's indicators, and Python keeps enough frames in flight
// (MAX_UNACKED in shm_comm/widgets/_pacing.py) to cover the wait.
const ACK_INTERVAL = 50;

function sharedScheduler() {
  const key = "__shmcScheduler_v4";
  if (!window[key]) {
    const views = new Set();
    const acks = new Map(); // widget manager (one per kernel) -> {carrier, frames}
    let pending = false;
    let timer = null;
    let lastAck = -Infinity;
    const request = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(tick);
    };
    const flush = () => {
      timer = null;
      lastAck = performance.now();
      for (const { carrier, frames } of acks.values()) carrier.send({ type: "ack", frames });
      acks.clear();
    };
    const tick = () => {
      pending = false;
      for (const view of views) {
        if (!view.dirty()) continue;
        const ack = view.step();
        if (!ack) continue;
        let group = acks.get(view.group);
        if (!group) acks.set(view.group, (group = { carrier: view, frames: {} }));
        group.frames[ack[0]] = ack[1];
      }
      if (acks.size && timer === null) {
        const wait = lastAck + ACK_INTERVAL - performance.now();
        if (wait <= 0) flush();
        else timer = setTimeout(flush, wait);
      }
      for (const view of views) {
        if (view.dirty()) {
          request();
          break;
        }
      }
    };
    const remove = (v) => {
      views.delete(v);
      for (const [group, entry] of acks) {
        if (entry.carrier === v) acks.delete(group); // its comm may be closed
      }
    };
    window[key] = { add: (v) => views.add(v), remove, request };
  }
  return window[key];
}

// What one view owes Python: the newest frame that asked for an acknowledgement (frames sent
// while a cell runs ask for none). applied(msg) when a frame has been applied; due() in the
// view's step(): the acknowledgement [widget id, frame] to send, once, or null.
function acknowledgements() {
  let widgetId = ""; // the Python widget's id, sent with every frame
  let ackFrame = -1; // newest frame number that asked for an acknowledgement
  let ackedFrame = -1; // newest frame number acknowledged
  return {
    applied(msg) {
      widgetId = msg.id || widgetId;
      if (msg.ack !== false) ackFrame = Math.max(ackFrame, msg.frame);
    },
    due() {
      if (ackFrame <= ackedFrame || !widgetId) return null;
      ackedFrame = ackFrame;
      return [widgetId, ackFrame];
    },
  };
}
