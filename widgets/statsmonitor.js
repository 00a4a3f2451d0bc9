// shm_comm StatsMonitor front end: one table row per channel.
//
// The Python side (shm_comm/widgets/statsmonitor.py) polls shm_comm.channel_info() a few
// times a second and syncs the `rows` trait: a small list of plain numbers per channel,
// formatted here.
// Test hooks: data-updates on the table, data-channel/data-rate/data-alive on each row.

function formatRate(hz) {
  if (hz == null) return "\u2014";
  if (hz >= 100) return `${hz.toFixed(0)} Hz`;
  return `${hz.toFixed(1)} Hz`;
}

function formatBytesPerSecond(bps) {
  if (bps == null) return "\u2014";
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let v = bps;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(v >= 100 || u === 0 ? 0 : 1)} ${units[u]}`;
}

function formatAge(s) {
  if (s == null) return "\u2014";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${(s / 60).toFixed(0)} min`;
}

function formatMemory(n) {
  if (n == null) return "\u2014";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v >= 100 || u === 0 ? 0 : 1)} ${units[u]}`;
}

function formatCount(n) {
  return n == null ? "\u2014" : n.toLocaleString("en-US");
}

const COLUMNS = [
  ["channel", "Channel", (r) => r.channel],
  ["publisher", "Publisher", (r) => r.publisher_text],
  ["rate", "Rate", (r) => formatRate(r.rate_hz)],
  ["bandwidth", "Bandwidth", (r) => formatBytesPerSecond(r.bytes_per_s)],
  ["messages", "Messages", (r) => formatCount(r.msg_count)],
  ["drops", "Drops", (r) => formatCount(r.drop_count)],
  ["subscribers", "Subscribers", (r) => formatCount(r.subscribers)],
  ["memory", "Shared memory", (r) => formatMemory(r.shm_bytes)],
  ["age", "Last message", (r) => (r.age_s == null ? "\u2014" : `${formatAge(r.age_s)} ago`)],
];

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "shmc-root shmc-stats";
  const table = document.createElement("table");
  table.className = "shmc-stats-table";
  table.dataset.updates = "0";
  const head = table.createTHead().insertRow();
  for (const [key, text] of COLUMNS) {
    const th = document.createElement("th");
    th.textContent = text;
    th.className = `shmc-col-${key}`;
    head.append(th);
  }
  const body = table.createTBody();
  root.append(table);
  el.append(root);
  let updates = 0;

  function update() {
    const rows = model.get("rows") || [];
    body.replaceChildren();
    for (const r of rows) {
      const tr = body.insertRow();
      tr.dataset.channel = r.channel;
      tr.dataset.rate = r.rate_hz == null ? "" : String(r.rate_hz);
      tr.dataset.alive = String(r.publisher_alive);
      tr.dataset.state = r.state;
      for (const [key, , fmt] of COLUMNS) {
        const td = tr.insertCell();
        td.className = `shmc-col-${key}`;
        td.textContent = fmt(r);
        if (key === "publisher") td.dataset.state = r.state;
        if (key === "drops" && r.drops_per_s > 0) td.classList.add("shmc-warn");
      }
    }
    updates += 1;
    table.dataset.updates = String(updates);
  }

  model.on("change:rows", update);
  update();
  return () => model.off("change:rows", update);
}

export default { render };
