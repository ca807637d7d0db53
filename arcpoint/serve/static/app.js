// Arcpoint dashboard: reads the service's own API every 2 s and draws with canvas.
// No libraries and no network beyond this service. Text from the API is inserted with
// textContent only (request metadata and backend names are data, never markup).
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("arcpoint-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("arcpoint-token", tokenInput.value));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function fmt(x, digits = 0) {
  return x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}
function pct(x) {
  return x == null ? "–" : (100 * x).toFixed(1) + "%";
}
function when(ts) {
  return ts == null ? "–" : new Date(ts * 1000).toLocaleTimeString();
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// ---------------------------------------------------------------- charts

function setupCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

function axes(ctx, w, h, pad, ymax, unit) {
  ctx.strokeStyle = "#d0d5dd";
  ctx.fillStyle = "#667085";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((h - pad.t - pad.b) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(w - pad.r, y);
    ctx.stroke();
    ctx.fillText(fmt(ymax * (1 - i / 4), ymax < 5 ? 2 : 0) + unit, 2, y + 4);
  }
}

// series: [{name, color, values: [number|null], band?: {lo: [], hi: []}, dash?}]
function lineChart(canvas, series, opts = {}) {
  const ctx = setupCanvas(canvas);
  const w = canvas.width, h = canvas.height;
  const pad = { l: 46, r: 8, t: 8, b: 16 };
  const n = Math.max(0, ...series.map((s) => s.values.length));
  let ymax = opts.ymax || 0;
  let points = 0;
  for (const s of series) {
    for (const v of s.values) if (v != null) { ymax = Math.max(ymax, v); points++; }
    if (s.band) for (const v of s.band.hi) if (v != null) ymax = Math.max(ymax, v);
  }
  canvas.dataset.points = String(points);
  if (opts.sla) ymax = Math.max(ymax, opts.sla * 1.1);
  if (!points) {
    ctx.fillStyle = "#98a2b3";
    ctx.fillText("waiting for data…", w / 2 - 40, h / 2);
    return 0;
  }
  ymax = ymax * 1.08 || 1;
  axes(ctx, w, h, pad, ymax, opts.unit || "");
  const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / Math.max(1, n - 1);
  const y = (v) => h - pad.b - ((h - pad.t - pad.b) * v) / ymax;
  if (opts.sla) {
    ctx.strokeStyle = "#b42318";
    ctx.setLineDash([2, 3]);
    ctx.beginPath();
    ctx.moveTo(pad.l, y(opts.sla));
    ctx.lineTo(w - pad.r, y(opts.sla));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#b42318";
    ctx.fillText("SLA", w - pad.r - 24, y(opts.sla) - 3);
  }
  for (const s of series) {
    if (s.band) {
      ctx.fillStyle = s.color + "22";
      ctx.beginPath();
      let started = false;
      const idx = [];
      s.band.hi.forEach((v, i) => { if (v != null && s.band.lo[i] != null) idx.push(i); });
      for (const i of idx) { started ? ctx.lineTo(x(i), y(s.band.hi[i])) : ctx.moveTo(x(i), y(s.band.hi[i])); started = true; }
      for (const i of idx.slice().reverse()) ctx.lineTo(x(i), y(s.band.lo[i]));
      if (started) ctx.fill();
    }
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width || 1.6;
    ctx.setLineDash(s.dash || []);
    // Ticks without a measurement are skipped, not drawn as gaps: a backend that gets few
    // requests still shows a line, and every measured tick gets a dot.
    ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v == null) return;
      pen ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v));
      pen = true;
    });
    ctx.stroke();
    ctx.setLineDash([]);
    if (!s.dash) {
      ctx.fillStyle = s.color;
      s.values.forEach((v, i) => {
        if (v != null) { ctx.beginPath(); ctx.arc(x(i), y(v), 1.8, 0, 2 * Math.PI); ctx.fill(); }
      });
    }
  }
  return points;
}

// Stacked shares (each tick's routed counts normalised to 1).
function stackedChart(canvas, names, rows) {
  const ctx = setupCanvas(canvas);
  const w = canvas.width, h = canvas.height;
  const pad = { l: 46, r: 8, t: 8, b: 16 };
  const usable = rows.filter((r) => names.reduce((a, n) => a + (r[n] || 0), 0) > 0);
  canvas.dataset.points = String(usable.length);
  if (!usable.length) {
    ctx.fillStyle = "#98a2b3";
    ctx.fillText("waiting for traffic…", w / 2 - 45, h / 2);
    return 0;
  }
  axes(ctx, w, h, pad, 1, "");
  const n = usable.length;
  const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / Math.max(1, n - 1);
  const y = (v) => h - pad.b - (h - pad.t - pad.b) * v;
  let base = new Array(n).fill(0);
  names.forEach((name, k) => {
    const top = usable.map((r, i) => base[i] + (r[name] || 0) / names.reduce((a, m) => a + (r[m] || 0), 0));
    ctx.fillStyle = COLORS[k % COLORS.length] + "cc";
    ctx.beginPath();
    top.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    for (let i = n - 1; i >= 0; i--) ctx.lineTo(x(i), y(base[i]));
    ctx.closePath();
    ctx.fill();
    base = top;
  });
  return usable.length;
}

function legend(id, names) {
  const box = $(id);
  box.replaceChildren(...names.map((n, k) => el("span", {}, el("i", { style: `background:${COLORS[k % COLORS.length]}` }), n)));
}

// ---------------------------------------------------------------- panels

function renderFleet(f) {
  $("model").textContent = f.model_version || "none (no forecaster yet)";
  $("routed").textContent = f.router.routed.toLocaleString();
  $("ambiguous").textContent = f.router.ambiguous_pct.toFixed(1) + "%";
  $("escalated").textContent = f.router.escalated_pct.toFixed(1) + "%";
  $("queued").textContent = f.decisions.queued;
  $("dropped").textContent = f.decisions.dropped;
  $("tick").textContent = f.last_tick ? `last tick ${when(f.last_tick)}, every ${f.tick_s} s` : "no tick yet";
  const rows = f.backends.map((b) => {
    const over = b.forecast_e2e_p95_ms != null && b.e2e_p95_ms != null && b.e2e_p95_ms > b.forecast_hi_ms;
    return el(
      "tr", { "data-backend": b.name },
      el("td", {}, b.name),
      el("td", {}, pct(b.planned_share)),
      el("td", {}, pct(b.routed_share)),
      el("td", {}, b.in_flight),
      el("td", {}, `${fmt(b.ttft_p50_ms)} / ${fmt(b.ttft_p95_ms)}`),
      el("td", { class: over ? "over" : "" }, fmt(b.e2e_p95_ms)),
      el("td", {}, b.forecast_e2e_p95_ms == null ? "–" : `${fmt(b.forecast_e2e_p95_ms)} [${fmt(b.forecast_lo_ms)}, ${fmt(b.forecast_hi_ms)}]`),
      el("td", {}, `${b.errors} (${pct(b.error_rate)})`),
      el("td", {}, pct(b.kv_cache_usage_perc)),
      el("td", { class: b.alarm ? "alarm" : "" }, b.alarm || ""),
    );
  });
  $("backends").tBodies[0].replaceChildren(...rows);
}

function renderHistory(h, sla) {
  const names = h.backends;
  const ticks = h.ticks;
  stackedChart($("chart-share"), names, ticks.map((t) => Object.fromEntries(names.map((n) => [n, t.backends[n] ? t.backends[n].routed : 0]))));
  legend("legend-share", names);
  const per = (field) => names.map((n, k) => ({
    name: n, color: COLORS[k % COLORS.length],
    values: ticks.map((t) => (t.backends[n] ? t.backends[n][field] : null)),
  }));
  lineChart($("chart-inflight"), per("in_flight"));
  legend("legend-inflight", names);
  lineChart($("chart-ttft"), per("ttft_p95_ms"), { unit: "" });
  legend("legend-ttft", names);
  lineChart($("chart-errors"), per("errors"));
  legend("legend-errors", names);
  // One chart per backend: observed e2e p95, forecast p95 (dashed) with its interval band.
  const box = $("e2e-charts");
  const byTs = new Map(h.forecasts.map((f) => [Math.round(f.ts), f.backends]));
  names.forEach((n, k) => {
    let fig = box.querySelector(`figure[data-backend="${CSS.escape(n)}"]`);
    if (!fig) {
      fig = el("figure", { "data-backend": n }, el("figcaption", {}, n), el("canvas", { width: "380", height: "160" }));
      box.append(fig);
    }
    const color = COLORS[k % COLORS.length];
    const fc = ticks.map((t) => (byTs.get(Math.round(t.ts)) || {})[n] || {});
    lineChart(fig.querySelector("canvas"), [
      { name: "forecast", color: "#475467", values: fc.map((f) => f.mean ?? null), dash: [5, 3], band: { lo: fc.map((f) => f.lo ?? null), hi: fc.map((f) => f.hi ?? null) } },
      { name: "observed", color, values: ticks.map((t) => (t.backends[n] ? t.backends[n].e2e_p95_ms : null)), width: 2 },
    ], { sla });
  });
}

function renderAlerts(a) {
  const items = a.alerts.slice(0, 12).map((x) =>
    el("li", {}, el("span", { class: `sev-${x.severity}` }, x.severity), ` ${when(x.created_at)} ${x.kind} · ${x.subject}`,
      x.recommended_action ? el("div", { class: "meta" }, x.recommended_action) : ""));
  $("alerts").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "none")]));
}

function renderEscalations(e) {
  const items = e.escalations.slice(0, 15).map((x) =>
    el("li", {},
      `${when(x.started_at)} → ${x.backend || "?"} `,
      x.fallback_reason ? el("span", { class: "sev-medium" }, `fallback: ${x.fallback_reason} `) : "",
      el("a", { href: `#trace=${encodeURIComponent(x.trace_id)}`, class: "trace-link" }, "trace"),
      x.decision_id ? el("span", { class: "meta" }, ` decision ${x.decision_id}`) : ""));
  $("escalations").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "none")]));
}

function renderModels(m) {
  const parts = [];
  parts.push(el("p", {}, "serving: ", el("b", {}, m.active || "none")));
  const vs = m.versions.slice(-6).reverse().map((v) =>
    el("li", {}, `${v.version_id}${v.version_id === m.active ? " (active)" : ""} · ${v.status || ""}`));
  parts.push(el("ul", { class: "list" }, ...(vs.length ? vs : [el("li", { class: "empty" }, "no versions")])));
  const ex = m.experiments.slice(-5).reverse().map((x) =>
    el("li", {}, `${x.experiment_id}: ${x.champion_id || "?"} vs ${x.challenger_id || "?"} · ${x.status}`));
  parts.push(el("h2", {}, "Experiments"));
  parts.push(el("ul", { class: "list" }, ...(ex.length ? ex : [el("li", { class: "empty" }, "no experiments")])));
  $("models").replaceChildren(...parts);
}

async function answer(id, decision, node) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = `Bearer ${tokenInput.value}`;
  const reason = decision === "reject" ? "rejected from the dashboard" : "approved from the dashboard";
  const r = await fetch(`/v1/approvals/${encodeURIComponent(id)}`, {
    method: "POST", headers, body: JSON.stringify({ decision, reason, by: "dashboard" }),
  });
  const body = await r.json().catch(() => ({}));
  const message = r.ok
    ? `${id} ${decision}d: ${(body.approval && body.approval.status) || "done"}`
    : `${id}: ${decision} failed: ${(body.detail || []).map((d) => d.reason).join("; ") || r.status}`;
  node.replaceChildren(el("span", { class: r.ok ? "done" : "sev-high" }, message));
  $("answered").textContent = message;
  if (r.ok) refresh();
}

function renderApprovals(a) {
  const box = $("approvals");
  if (!a.available) {
    box.replaceChildren(el("p", { class: "empty" }, "the approvals flow is not installed in this version"));
    return;
  }
  const items = a.approvals.map((x) => {
    const id = x.approval_id || x.id;
    const actions = el("div", { class: "actions" },
      el("button", { type: "button", class: "approve", onclick: (ev) => answer(id, "approve", ev.target.parentNode) }, "Approve"),
      el("button", { type: "button", class: "reject", onclick: (ev) => answer(id, "reject", ev.target.parentNode) }, "Reject"));
    return el("div", { class: "approval", "data-id": id },
      el("b", {}, `${x.action || "change"} ${x.version_id || ""}`),
      ` (serving ${x.current_version_id || "none"}) · ${id}`,
      el("div", {}, x.summary || ""),
      el("div", { class: "meta" }, `proposed by ${x.proposed_by || "?"} at ${when(x.created_at)}`,
        x.trace_id ? el("a", { href: `#trace=${encodeURIComponent(x.trace_id)}` }, " · trace") : ""),
      actions);
  });
  box.replaceChildren(...(items.length ? items : [el("p", { class: "empty" }, "none pending")]));
}

async function showTrace() {
  const m = location.hash.match(/^#trace=(.+)$/);
  const panel = $("trace-panel");
  if (!m) { panel.hidden = true; return; }
  const id = decodeURIComponent(m[1]);
  panel.hidden = false;
  $("trace-id").textContent = id;
  try {
    $("trace-body").textContent = JSON.stringify(await getJSON(`/v1/traces/${encodeURIComponent(id)}`), null, 2);
  } catch (err) {
    $("trace-body").textContent = String(err);
  }
}
$("trace-close").addEventListener("click", () => { location.hash = ""; });
window.addEventListener("hashchange", showTrace);

// ---------------------------------------------------------------- the loop

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const live = $("live");
  try {
    const [fleet, hist] = await Promise.all([getJSON("/v1/fleet"), getJSON("/v1/fleet/history?limit=120")]);
    renderFleet(fleet);
    renderHistory(hist, fleet.sla_ms);
    const [alerts, esc, models, approvals] = await Promise.all([
      getJSON("/v1/alerts?limit=12"), getJSON("/v1/escalations?limit=15"),
      getJSON("/v1/models"), getJSON("/v1/approvals"),
    ]);
    renderAlerts(alerts);
    renderEscalations(esc);
    renderModels(models);
    renderApprovals(approvals);
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    live.className = "pill ok";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    live.textContent = "disconnected";
    live.className = "pill bad";
    $("status").textContent = String(err);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}
refresh();
showTrace();
