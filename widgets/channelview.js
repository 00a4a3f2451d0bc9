// shm_comm widgets: what the views of one channel (LivePlot, ImageView) share: the root and
// header (title, status badge, pause button), DOM writes that skip what did not change, and
// sending to a kernel that may be gone. Python puts this file, after scheduler.js, in front of
// each of their ES modules.
//
// Test hooks: data-channel and data-status on the root, data-status on the badge.

// DOM writes only on change: even an identical textContent replaces the text node and
// makes the browser lay out the page again, which costs more than drawing the plot.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setData(node, key, value) {
  if (node.dataset[key] !== value) node.dataset[key] = value;
}

// The root of a view of `model`'s channel with its header: {root, send(msg),
// showStatus(status, statusText), start(), dispose()}. `kind` names the widget in console
// messages, `className` is added to the root's, `extras` are nodes placed between the badge
// and the pause button, `freezeHint` is the pause button's tooltip while live, and
// `onPaused()` runs when the view is paused or resumed. start() shows the title and the
// button (call it once the view's own state exists: it runs onPaused), dispose() stops
// listening to the model.
function channelView(model, { kind, className, extras, freezeHint, onPaused }) {
  const root = document.createElement("div");
  root.className = `shmc-root ${className}`;
  root.dataset.status = "starting";
  root.dataset.channel = model.get("channel");

  const header = document.createElement("div");
  header.className = "shmc-header";
  const title = document.createElement("span");
  title.className = "shmc-title";
  const badge = document.createElement("span");
  badge.className = "shmc-badge";
  const button = document.createElement("button");
  button.className = "shmc-button shmc-pause";
  button.type = "button";
  header.append(title, badge, ...extras, button);
  root.append(header);

  const send = (msg) => {
    try {
      model.send(msg);
    } catch (err) {
      console.warn(`shm_comm ${kind}: send failed`, err); // the kernel may be gone
    }
  };

  // The badge says "paused" while paused; the root keeps the channel's status.
  const showStatus = (status, statusText) => {
    const paused = model.get("paused");
    setText(badge, paused ? "paused" : statusText);
    setData(badge, "status", paused ? "paused" : status);
    setData(root, "status", status);
  };

  const setTitle = () => setText(title, model.get("title") || model.get("channel"));
  const setButton = () => {
    const paused = model.get("paused");
    button.textContent = paused ? "\u25B6 Resume" : "\u275A\u275A Pause";
    button.title = paused ? "Resume live updates" : freezeHint;
    root.classList.toggle("shmc-paused", paused);
    onPaused();
  };

  button.addEventListener("click", () => {
    model.set("paused", !model.get("paused"));
    model.save_changes();
  });

  return {
    root,
    send,
    showStatus,
    start: () => {
      model.on("change:paused", setButton);
      model.on("change:title", setTitle);
      setTitle();
      setButton();
    },
    dispose: () => {
      model.off("change:paused", setButton);
      model.off("change:title", setTitle);
    },
  };
}
