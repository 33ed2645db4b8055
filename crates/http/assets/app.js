// StreamHouse console: renders one view per path from the JSON API (/api/v1/...), and a live
// throughput chart from /api/v1/stats. No external assets, no framework.
//
// When the agent requires authentication (SASL on), the API answers 401 and the console asks
// for a user name and password, kept for this tab only (sessionStorage) and sent as HTTP Basic
// with every request; the agent authorizes each by the user's ACLs.
"use strict";

const API = "/api/v1";
const AUTH_KEY = "streamhouse.auth";

/** Raised by api() when the agent wants credentials: the login form is showing. */
class LoginRequired extends Error {}

// ---- helpers ----------------------------------------------------------------------------------

/** Builds an element; children may be strings (set as text, never parsed as HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

async function api(path, options) {
  // X-Requested-With makes the agent answer 401 with a challenge the browser leaves to this
  // page, instead of opening its own login dialog.
  const headers = { "content-type": "application/json", "x-requested-with": "streamhouse-console" };
  const auth = sessionStorage.getItem(AUTH_KEY);
  if (auth) headers.authorization = "Basic " + auth;
  const opts = Object.assign({ headers }, options);
  const res = await fetch(API + path, opts);
  if (res.status === 401) {
    showLogin(auth ? "Wrong user name or password." : null);
    throw new LoginRequired("login required");
  }
  const text = await res.text();
  const body = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((body && body.error) || res.status + " " + res.statusText);
  return body;
}

function table(columns, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : null }, c.title)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none"))
      : rows.map(r => h("tr", {}, columns.map(c => h("td", { class: c.num ? "num" : null }, c.cell(r)))))));
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
}

function fmtTime(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-"; }

function setStatus(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = isError ? "error" : "muted";
}

const enc = encodeURIComponent;

// ---- login ------------------------------------------------------------------------------------

/** HTTP Basic's `user:password`, base64 of its UTF-8 bytes. */
function basicToken(user, password) {
  const bytes = new TextEncoder().encode(user + ":" + password);
  return btoa(String.fromCharCode(...bytes));
}

let loginShowing = false;

function showLogin(message) {
  sessionStorage.removeItem(AUTH_KEY);
  document.getElementById("logout").hidden = true;
  if (loginShowing) return;
  loginShowing = true;
  const user = h("input", { name: "username", autocomplete: "username", placeholder: "user", required: "" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", placeholder: "password", required: "" });
  const form = h("form", { id: "login", onsubmit: async e => {
    e.preventDefault();
    sessionStorage.setItem(AUTH_KEY, basicToken(user.value, password.value));
    loginShowing = false;
    render();
    pollStats();
  } }, user, password, h("button", { type: "submit" }, "Log in"));
  const view = document.getElementById("view");
  view.replaceChildren(h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "This agent requires a SASL/SCRAM user."), form);
  if (message) setStatus(message, true);
  user.focus();
}

function logout(e) {
  e.preventDefault();
  showLogin(null);
  setStatus("Logged out.");
}

// ---- views ------------------------------------------------------------------------------------

async function topicsView(view) {
  const topics = await api("/topics");
  const name = h("input", { name: "name", placeholder: "topic name", required: "" });
  const parts = h("input", { name: "partitions", type: "number", min: "1", value: "1", class: "count" });
  const form = h("form", { id: "create-topic", onsubmit: async e => {
    e.preventDefault();
    try {
      await api("/topics", { method: "POST", body: JSON.stringify({ name: name.value, partitions: Number(parts.value) }) });
      render();
    } catch (err) { setStatus(err.message, true); }
  } }, name, parts, h("button", { type: "submit" }, "Create topic"));
  view.replaceChildren(h("h1", {}, "Topics"), form, table([
    { title: "Name", cell: t => h("a", { href: "/ui/topics/" + enc(t.name) }, t.name) },
    { title: "Partitions", num: true, cell: t => t.partitions },
    { title: "Created", cell: t => fmtTime(t.created_at_ms) },
    { title: "Id", cell: t => h("span", { class: "muted" }, t.id) },
  ], topics));
}

async function topicView(view, name) {
  const t = await api("/topics/" + enc(name));
  const value = h("input", { placeholder: "value", required: "" });
  const key = h("input", { placeholder: "key (optional)" });
  const produce = h("form", { id: "produce", onsubmit: async e => {
    e.preventDefault();
    const record = { value: value.value };
    if (key.value) record.key = key.value;
    try {
      await api("/topics/" + enc(name) + "/records", { method: "POST", body: JSON.stringify({ records: [record] }) });
      value.value = "";
      render();
    } catch (err) { setStatus(err.message, true); }
  } }, key, value, h("button", { type: "submit" }, "Produce"));
  const remove = h("button", { class: "danger", onclick: async () => {
    if (!confirm("Delete topic " + name + "?")) return;
    try { await api("/topics/" + enc(name), { method: "DELETE" }); location.href = "/ui/topics"; }
    catch (err) { setStatus(err.message, true); }
  } }, "Delete topic");
  const records = h("div", {}, h("p", { class: "muted" }, "Loading records…"));
  view.replaceChildren(
    h("h1", {}, "Topic ", t.name),
    produce,
    h("h2", {}, "Partitions"),
    table([
      { title: "Partition", num: true, cell: p => p.partition },
      { title: "Log start", num: true, cell: p => p.log_start_offset },
      { title: "High watermark", num: true, cell: p => p.high_watermark },
      { title: "Segments", num: true, cell: p => p.segment_count },
      { title: "Size", num: true, cell: p => fmtBytes(p.size_bytes) },
      { title: "Leader (lease)", cell: p => p.lease ? p.lease.agent_id + " @" + p.lease.epoch : "-" },
    ], t.partitions),
    h("h2", {}, "Latest records"), records,
    h("h2", {}, "Configuration"),
    table([{ title: "Name", cell: c => c[0] }, { title: "Value", cell: c => c[1] }], Object.entries(t.config)),
    remove);
  records.replaceChildren(await latestRecords(name, t.partitions));
}

/** The last few records of every partition, newest first. */
async function latestRecords(name, partitions) {
  const rows = [];
  for (const p of partitions) {
    const from = Math.max(p.log_start_offset, p.high_watermark - 10);
    if (from >= p.high_watermark) continue;
    const r = await api(`/topics/${enc(name)}/partitions/${p.partition}/records?offset=${from}&max_records=10`);
    for (const rec of r.records) rows.push(Object.assign({ partition: p.partition }, rec));
  }
  rows.sort((a, b) => b.timestamp_ms - a.timestamp_ms || b.offset - a.offset);
  return table([
    { title: "Partition", num: true, cell: r => r.partition },
    { title: "Offset", num: true, cell: r => r.offset },
    { title: "Time", cell: r => fmtTime(r.timestamp_ms) },
    { title: "Key", cell: r => r.key === null ? h("span", { class: "muted" }, "null") : r.key },
    { title: "Value", cell: r => r.value === null ? h("span", { class: "muted" }, "null") : r.value },
  ], rows.slice(0, 20));
}

async function groupsView(view) {
  const groups = await api("/groups");
  view.replaceChildren(h("h1", {}, "Consumer groups"), table([
    { title: "Group", cell: g => h("a", { href: "/ui/groups/" + enc(g.group_id) }, g.group_id) },
    { title: "State", cell: g => g.state },
    { title: "Protocol", cell: g => g.protocol_type || "-" },
    { title: "Total lag", num: true, cell: g => g.total_lag },
  ], groups));
}

async function groupView(view, id) {
  const g = await api("/groups/" + enc(id));
  view.replaceChildren(
    h("h1", {}, "Group ", g.group_id, " ", h("span", { class: "muted" }, "(" + g.state + ")")),
    h("h2", {}, "Lag"),
    table([
      { title: "Topic", cell: o => h("a", { href: "/ui/topics/" + enc(o.topic) }, o.topic) },
      { title: "Partition", num: true, cell: o => o.partition },
      { title: "Committed", num: true, cell: o => o.committed },
      { title: "High watermark", num: true, cell: o => o.high_watermark },
      { title: "Lag", num: true, cell: o => o.lag },
    ], g.offsets),
    h("h2", {}, "Members"),
    table([
      { title: "Member", cell: m => m.member_id },
      { title: "Client", cell: m => m.client_id },
      { title: "Host", cell: m => m.client_host },
    ], g.members));
}

async function agentsView(view) {
  const [agents, leases] = await Promise.all([api("/agents"), api("/leases")]);
  const now = Date.now();
  view.replaceChildren(
    h("h1", {}, "Agents"),
    table([
      { title: "Agent", cell: a => a.agent_id + (a.local ? " (this agent)" : "") },
      { title: "Node", num: true, cell: a => a.node_id },
      { title: "Kafka address", cell: a => a.kafka_host + ":" + a.kafka_port },
      { title: "Leases held", num: true, cell: a => a.leases_held },
      { title: "Last heartbeat", cell: a => fmtTime(a.last_heartbeat_ms) },
    ], agents),
    h("h2", {}, "Partition leases"),
    table([
      { title: "Topic", cell: l => h("a", { href: "/ui/topics/" + enc(l.topic) }, l.topic) },
      { title: "Partition", num: true, cell: l => l.partition },
      { title: "Agent", cell: l => l.agent_id },
      { title: "Epoch", num: true, cell: l => l.epoch },
      { title: "Expires", cell: l => l.expires_at_ms > now ? fmtTime(l.expires_at_ms) : "expired" },
    ], leases));
}

/** Picks the view from the path: /ui/topics[/name], /ui/groups[/id], /ui/agents. */
async function render() {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] === "ui" && parts[1] ? parts[1] : "topics";
  const item = parts[2];
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  const view = document.getElementById("view");
  try {
    if (section === "topics") await (item ? topicView(view, item) : topicsView(view));
    else if (section === "groups") await (item ? groupView(view, item) : groupsView(view));
    else if (section === "agents") await agentsView(view);
    else view.replaceChildren(h("p", { class: "error" }, "No such page."));
    setStatus("Updated " + new Date().toLocaleTimeString());
    document.getElementById("logout").hidden = !sessionStorage.getItem(AUTH_KEY);
  } catch (err) {
    if (err instanceof LoginRequired) return;
    view.replaceChildren(h("p", { class: "error" }, err.message));
    setStatus(err.message, true);
  }
}

// ---- throughput chart -------------------------------------------------------------------------

// Samples survive page changes (sessionStorage), so moving between views keeps the history.
const chart = restoreChart() || { samples: [], last: null, max: 60 };

function restoreChart() {
  try {
    const saved = JSON.parse(sessionStorage.getItem("streamhouse.chart"));
    // A stale history (tab left alone) would draw a misleading line from long ago.
    if (saved && saved.last && Date.now() - saved.last.timestamp_ms < 10000) return saved;
  } catch (_) { /* no or unreadable history: start afresh */ }
  return null;
}

async function pollStats() {
  if (loginShowing) return;
  try {
    const s = await api("/stats");
    if (chart.last) {
      const dt = Math.max((s.timestamp_ms - chart.last.timestamp_ms) / 1000, 0.001);
      chart.samples.push({
        records: Math.max(0, (s.records_in_total - chart.last.records_in_total) / dt),
        bytesIn: Math.max(0, (s.bytes_in_total - chart.last.bytes_in_total) / dt),
        bytesOut: Math.max(0, (s.bytes_out_total - chart.last.bytes_out_total) / dt),
      });
      if (chart.samples.length > chart.max) chart.samples.shift();
    }
    const first = chart.last === null;
    if (!first) showObjectStore(chart.last, s);
    chart.last = s;
    sessionStorage.setItem("streamhouse.chart", JSON.stringify(chart));
    if (!first) drawChart();
  } catch (err) {
    if (!(err instanceof LoginRequired)) setStatus("stats: " + err.message, true);
  }
}

// Object-store request rates between two samples, the request cost they would run up in a
// month, and the consolidation backlog: what this agent costs to run on S3.
function showObjectStore(prev, s) {
  const a = prev.object_store, b = s.object_store;
  if (!a || !b) return;
  const dt = Math.max((s.timestamp_ms - prev.timestamp_ms) / 1000, 0.001);
  const rate = (field) => Math.max(0, (b[field] - a[field]) / dt);
  const mbIn = Math.max(0, s.bytes_in_total - prev.bytes_in_total) / 1e6;
  const puts = b.puts_total - a.puts_total;
  const objects = b.flush_objects_total - a.flush_objects_total;
  const segments = b.flush_segments_total - a.flush_segments_total;
  const month = rate("cost_usd_total") * 30 * 24 * 3600;
  const parts = [
    `${rate("puts_total").toFixed(1)} PUT/s`,
    `${rate("gets_total").toFixed(1)} GET/s`,
    mbIn > 0 ? `${(puts / mbIn).toFixed(2)} PUTs/MB` : "– PUTs/MB",
    objects > 0 ? `${(segments / objects).toFixed(1)} partitions/object` : "– partitions/object",
    `backlog ${b.consolidation_backlog_slices} slices, ` +
      `${(b.consolidation_backlog_bytes / 1e6).toFixed(1)} MB, ` +
      `${b.consolidation_backlog_age_seconds.toFixed(0)} s`,
    `≈ $${month.toFixed(2)}/month in requests`,
  ];
  document.getElementById("object-store").textContent = "Object storage: " + parts.join(" · ");
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#e3e6ec";
  for (let i = 1; i < 4; i++) {
    const y = Math.round((height * i) / 4) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke();
  }
  const css = getComputedStyle(document.documentElement);
  // Records and bytes differ by orders of magnitude: each series is scaled to its own peak.
  const series = [["records", "--rec"], ["bytesIn", "--bin"], ["bytesOut", "--bout"]];
  for (const [field, color] of series) {
    const values = chart.samples.map(s => s[field]);
    const peak = Math.max(1, ...values);
    const points = values.map((v, i) => [(width * i) / (chart.max - 1), height - 4 - ((height - 8) * v) / peak]);
    ctx.strokeStyle = ctx.fillStyle = css.getPropertyValue(color).trim();
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
    ctx.stroke();
    if (field === "records" && points.length > 1) {
      // Records as a shaded area, so the byte lines drawn on top stay distinguishable.
      ctx.lineTo(points[points.length - 1][0], height);
      ctx.lineTo(0, height);
      ctx.globalAlpha = 0.15;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
  }
  const last = chart.samples[chart.samples.length - 1];
  document.getElementById("rate-records").textContent = last.records.toFixed(1);
  document.getElementById("rate-bytes-in").textContent = fmtBytes(last.bytesIn);
  document.getElementById("rate-bytes-out").textContent = fmtBytes(last.bytesOut);
  // For tests and curious operators: how many points are drawn, and the latest records rate.
  canvas.dataset.samples = String(chart.samples.length);
  canvas.dataset.recordsRate = last.records.toFixed(3);
  canvas.dataset.recordsTotal = String(chart.last.records_in_total);
}

document.getElementById("logout").addEventListener("click", logout);
render();
pollStats();
setInterval(pollStats, 1000);
