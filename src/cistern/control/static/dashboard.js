// cistern dashboard: polls the admin API (read-only endpoints) and draws SVG line charts.
// Plain JavaScript, no build step. Actions (ending a session) send the token typed by the user.
"use strict";

const HISTORY = 60;           // samples kept per chart
const series = { throughput: [], iops: [], latency: [] };
let lastStats = null;
let lastEvent = 0;

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function getJSON(path) {
  const rsp = await fetch(path, { cache: "no-store" });
  if (!rsp.ok) throw new Error(path + ": HTTP " + rsp.status);
  return rsp.json();
}

function draw(name, values, format) {
  const svg = document.getElementById("chart-" + name);
  const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height"));
  const max = Math.max(1e-9, ...values);
  const step = w / (HISTORY - 1);
  const offset = HISTORY - values.length;
  const pts = values.map((v, i) => ((offset + i) * step).toFixed(1) + "," + (h - 4 - (v / max) * (h - 14)).toFixed(1));
  const ns = "http://www.w3.org/2000/svg";
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const frame = document.createElementNS(ns, "rect");
  frame.setAttribute("x", 0); frame.setAttribute("y", 0);
  frame.setAttribute("width", w); frame.setAttribute("height", h);
  frame.setAttribute("fill", "none"); frame.setAttribute("stroke", "#ddd");
  svg.appendChild(frame);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2a6fdb"); line.setAttribute("stroke-width", 2);
  svg.appendChild(line);
  const last = values.length ? values[values.length - 1] : 0;
  svg.setAttribute("data-last", String(last));
  svg.setAttribute("data-max", String(max));
  svg.setAttribute("data-points", String(values.length));
  document.getElementById("v-" + name).textContent = format(last) + " (max " + format(max) + ")";
}

function sample(stats) {
  if (lastStats) {
    const dt = stats.time - lastStats.time;
    if (dt > 0) {
      const before = new Map(lastStats.luns.map(l => [l.target + "/" + l.lun, l]));
      let bytes = 0, cmds = 0, lat = 0;
      for (const l of stats.luns) {
        const b = before.get(l.target + "/" + l.lun);
        if (!b) continue;
        bytes += (l.read_bytes - b.read_bytes) + (l.write_bytes - b.write_bytes);
        cmds += l.commands - b.commands;
        lat += l.latency_sum_seconds - b.latency_sum_seconds;
      }
      const push = (k, v) => { series[k].push(Math.max(0, v)); if (series[k].length > HISTORY) series[k].shift(); };
      push("throughput", bytes / dt);
      push("iops", cmds / dt);
      push("latency", cmds > 0 ? lat / cmds : 0);
    }
  }
  lastStats = stats;
  draw("throughput", series.throughput, v => fmtBytes(v) + "/s");
  draw("iops", series.iops, v => v.toFixed(0));
  draw("latency", series.latency, v => (v * 1000).toFixed(2) + " ms");
}

function renderTargets(targets) {
  const tbody = document.querySelector("#targets tbody");
  tbody.replaceChildren();
  const lbody = document.querySelector("#luns tbody");
  lbody.replaceChildren();
  for (const t of targets) {
    const row = document.createElement("tr");
    cell(row, t.name + (t.alias ? " (" + t.alias + ")" : ""));
    cell(row, t.portal_groups.map(g => g.tag + ": " + g.portals.join(", ") + " [" + g.alua_state + "]").join("\n"));
    cell(row, t.access === "open" ? "open" : t.acl.join("\n"));
    cell(row, t.auth ? "CHAP " + t.auth.username : "none");
    cell(row, String(t.sessions.length));
    row.dataset.target = t.name;
    tbody.appendChild(row);
    for (const l of t.luns) {
      const lr = document.createElement("tr");
      cell(lr, t.name); cell(lr, String(l.lun)); cell(lr, l.size_bytes == null ? "-" : fmtBytes(l.size_bytes)); cell(lr, l.path || l.kind);
      cell(lr, l.summary || "");
      lr.dataset.lun = t.name + "/" + l.lun;
      cell(lr, fmtBytes(l.stats.read_bytes)); cell(lr, fmtBytes(l.stats.write_bytes));
      cell(lr, String(l.stats.read_commands + l.stats.write_commands + l.stats.other_commands));
      cell(lr, String(l.stats.in_flight));
      lbody.appendChild(lr);
    }
  }
}

async function endSession(tsih) {
  const token = document.getElementById("token").value;
  const rsp = await fetch("api/sessions/" + tsih, { method: "DELETE", headers: token ? { Authorization: "Bearer " + token } : {} });
  if (!rsp.ok) {
    const body = await rsp.json().catch(() => ({}));
    alert("cannot end session " + tsih + ": " + ((body.error && body.error.cause) || rsp.status));
  }
}

function renderSessions(sessions) {
  const tbody = document.querySelector("#sessions tbody");
  tbody.replaceChildren();
  for (const s of sessions) {
    const row = document.createElement("tr");
    row.dataset.tsih = String(s.tsih);
    cell(row, String(s.tsih)); cell(row, s.initiator); cell(row, s.isid); cell(row, s.target || "discovery");
    cell(row, s.connections.map(c => c.peer + " → " + c.portal).join("\n"));
    const p = s.params;
    cell(row, "HeaderDigest=" + (p.header_digest ? "CRC32C" : "None") + " DataDigest=" + (p.data_digest ? "CRC32C" : "None") +
      " MaxBurstLength=" + p.max_burst_length + " ImmediateData=" + (p.immediate_data ? "Yes" : "No"));
    cell(row, fmtBytes(s.read_bytes)); cell(row, fmtBytes(s.write_bytes));
    const td = cell(row, "");
    const btn = document.createElement("button");
    btn.textContent = "end";
    btn.addEventListener("click", () => endSession(s.tsih));
    td.appendChild(btn);
    tbody.appendChild(row);
  }
}

function renderEvents(events) {
  const ul = document.getElementById("events");
  for (const e of events) {
    lastEvent = Math.max(lastEvent, e.seq);
    const li = document.createElement("li");
    li.className = e.kind;
    li.textContent = new Date(e.time * 1000).toLocaleTimeString() + " " + e.kind + ": " + e.message;
    ul.insertBefore(li, ul.firstChild);
  }
  while (ul.children.length > 50) ul.removeChild(ul.lastChild);
}

async function tick() {
  try {
    const [info, stats, targets, sessions, events] = await Promise.all([
      getJSON("api/sysinfo"), getJSON("api/stats"), getJSON("api/targets"), getJSON("api/sessions"),
      getJSON("api/events?since=" + lastEvent),
    ]);
    document.getElementById("sysinfo").textContent =
      "version " + info.version + " · pid " + info.pid + " · up " + Math.round(info.uptime_seconds) + " s · " +
      info.targets + " target(s), " + info.sessions + " session(s)";
    sample(stats);
    renderTargets(targets.targets);
    renderSessions(sessions.sessions);
    renderEvents(events.events);
  } catch (err) {
    document.getElementById("sysinfo").textContent = "cannot reach the server: " + err.message;
  }
}

tick();
setInterval(tick, 1000);
