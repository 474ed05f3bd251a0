// The dashboard's script: a file, not inline, so the CSP needs no 'unsafe-inline'.
//
// Live data comes from GET /v1/alerts/stream (server-sent events), read with fetch() so
// that the token travels in the Authorization header like on every other route (the
// browser's EventSource cannot send headers; README "Live alerts"). `alert` events update
// the firing alerts, `stats` events (every ~2 s) the campaign cards; per campaign the
// regulatory windows (GET .../compliance) and the chart's minutes (GET .../minutes) are
// fetched again when its figures changed, at most every few seconds.
"use strict";
const KEY = "cdrwatch-token";
const WINDOWS = ["15m", "1h", "24h", "cumulative"];
const COMPLIANCE_EVERY_MS = 5000;
const MINUTES_EVERY_MS = 10000;
const CHART_HOURS = 3;
const RECONNECT_MS = 3000;
const $ = (id) => document.getElementById(id);
const NOUNS = { silent: "silent calls", abandoned: "abandoned calls" };

const state = {
  token: null,
  role: null,
  controller: null,
  lastEventId: null,
  alerts: new Map(), // id -> alert (firing only)
  touched: new Set(), // alert ids changed by the stream since it opened
  cards: new Map(), // tenant/campaign -> card state
};

// --- formatting: local time of the viewer, no microseconds ------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
function localTime(iso) {
  return iso ? timeFormat.format(new Date(iso)) : "—";
}
function percent(rate) {
  return rate == null ? "—" : (rate * 100).toFixed(2) + " %";
}
function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return seconds + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function keyOf(tenant, campaign) {
  return tenant + "/" + campaign;
}
function campaignUrl(c, what) {
  return "/v1/campaigns/" + encodeURIComponent(c.campaign_id) + "/" + what +
    "?tenant=" + encodeURIComponent(c.tenant_id);
}

// --- HTTP -----------------------------------------------------------------------------------

class AuthError extends Error {}

async function api(path, options) {
  const init = options || {};
  init.headers = Object.assign({ Authorization: "Bearer " + state.token }, init.headers || {});
  const response = await fetch(path, init);
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(response.status === 401 ? "token refused" : "role too low");
  }
  if (!response.ok) throw new Error(path.split("?")[0] + ": HTTP " + response.status);
  return response.json();
}

function fail(error) {
  $("error").textContent = error.message;
  if (error instanceof AuthError) logout();
}

// --- the stream -----------------------------------------------------------------------------

async function stream() {
  const controller = new AbortController();
  state.controller = controller;
  const headers = { Authorization: "Bearer " + state.token };
  if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
  const response = await fetch("/v1/alerts/stream", { headers, signal: controller.signal });
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(response.status === 401 ? "token refused" : "role too low");
  }
  if (!response.ok) throw new Error("alert stream: HTTP " + response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let opened = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    if (!opened) {
      opened = true;
      setConnection("live");
      // The stream's position is fixed: every later change arrives on it.
      if (state.lastEventId === null) loadFiringAlerts().catch(fail);
    }
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      handle(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function handle(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  const payload = JSON.parse(data.join("\n"));
  if (id !== null) state.lastEventId = id;
  if (event === "alert") onAlert(payload);
  else if (event === "stats") onStats(payload);
}

async function run() {
  while (state.token !== null) {
    try {
      await stream();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error instanceof AuthError) return fail(error);
      $("error").textContent = error.message;
    }
    if (state.token === null) return;
    setConnection("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

function setConnection(text) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = "badge " + (text === "live" ? "live" : text === "offline" ? "none" : "stale");
}

// --- alerts ---------------------------------------------------------------------------------

async function loadFiringAlerts() {
  const page = await api("/v1/alerts?state=firing&limit=500");
  for (const alert of page.items) {
    if (!state.touched.has(alert.id)) state.alerts.set(alert.id, alert);
  }
  renderAlerts();
}

function onAlert(alert) {
  state.touched.add(alert.id);
  if (alert.state === "firing") state.alerts.set(alert.id, alert);
  else state.alerts.delete(alert.id);
  renderAlerts();
}

function canAck() {
  return state.role === "compliance" || state.role === "admin";
}

function renderAlerts() {
  const body = $("alerts").tBodies[0];
  const items = Array.from(state.alerts.values()).sort((a, b) =>
    a.opened_at < b.opened_at ? 1 : a.opened_at > b.opened_at ? -1 : 0);
  body.replaceChildren(...items.map(alertRow));
  $("alert-count").textContent = items.length ? "(" + items.length + ")" : "";
  $("no-alerts").hidden = items.length > 0;
}

function alertRow(a) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = a.id;
  tr.append(
    el("td", localTime(a.opened_at)),
    el("td", a.campaign_id + (a.tenant_id && a.tenant_id !== "default" ? " (" + a.tenant_id + ")" : "")),
    el("td", a.rule),
    el("td", a.severity, a.severity),
    // A per-call rule has no rate cap (threshold 0): its figure is the count of calls.
    el("td", a.threshold > 0 ? percent(a.value) + " / " + percent(a.threshold) : "per call", "num"),
    el("td", a.numerator + " / " + a.denominator, "num"),
    el("td", localTime(a.window.start) + " → " + localTime(a.window.end)),
    evidenceCell(a),
    ackCell(a));
  return tr;
}

function evidenceCell(a) {
  const td = el("td");
  const ids = (a.evidence && a.evidence.call_ids) || [];
  if (ids.length === 0) {
    td.textContent = "—";
    return td;
  }
  const details = el("details");
  details.append(el("summary", ids.length + " call" + (ids.length === 1 ? "" : "s")));
  const list = el("ul");
  for (const id of ids) list.append(el("li", id));
  details.append(list);
  td.append(details);
  if (a.reference) td.append(el("div", a.reference, "muted"));
  return td;
}

function ackCell(a) {
  const td = el("td");
  if (a.acknowledged_at) {
    td.textContent = "by " + a.acknowledged_by + " at " + localTime(a.acknowledged_at) +
      (a.ack_note ? ": " + a.ack_note : "");
    return td;
  }
  if (!canAck()) {
    td.textContent = "not acknowledged";
    return td;
  }
  const note = el("input");
  note.placeholder = "note";
  note.maxLength = 2000;
  const button = el("button", "Acknowledge", "ack");
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const acked = await api("/v1/alerts/" + encodeURIComponent(a.id) + "/ack", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ note: note.value }),
      });
      if (acked.state === "firing") state.alerts.set(acked.id, acked);
      renderAlerts();
    } catch (error) {
      button.disabled = false;
      fail(error);
    }
  });
  td.append(note, button);
  return td;
}

// --- campaigns ------------------------------------------------------------------------------

function onStats(page) {
  $("updated").textContent = "updated " + timeFormat.format(new Date());
  const seen = new Set();
  const container = $("campaigns");
  for (const c of page.items) {
    const key = keyOf(c.tenant_id, c.campaign_id);
    seen.add(key);
    let card = state.cards.get(key);
    if (!card) {
      card = newCard(c);
      state.cards.set(key, card);
      container.append(card.node);
    }
    updateCard(card, c);
  }
  for (const [key, card] of state.cards) {
    if (!seen.has(key)) {
      if (card.chart) card.chart.destroy();
      card.node.remove();
      state.cards.delete(key);
    }
  }
  $("no-campaigns").hidden = page.items.length > 0;
}

function newCard(c) {
  const node = $("campaign-card").content.firstElementChild.cloneNode(true);
  node.dataset.campaign = c.campaign_id;
  node.dataset.tenant = c.tenant_id;
  return { node, campaign: c, chart: null, complianceAt: 0, minutesAt: 0, figures: null };
}

function updateCard(card, c) {
  card.campaign = c;
  const node = card.node;
  const q = (selector) => node.querySelector(selector);
  q(".name").textContent = c.campaign_id;
  const status = q(".status");
  status.textContent = c.status;
  status.className = "badge status " + c.status;
  const feed = q(".feed");
  feed.textContent = c.feed === "none" ? "no CDR yet" : c.feed;
  feed.className = "badge feed " + c.feed;
  node.classList.toggle("is-stale", c.feed === "stale");
  q(".meta").textContent = "tenant " + c.tenant_id + " · profile " + (c.profile || "default") +
    " · " + c.firing_alerts + " firing alert" + (c.firing_alerts === 1 ? "" : "s");
  const cumulative = c.windows.cumulative;
  q(".last").textContent = c.last_cdr_received_at
    ? "last CDR received " + localTime(c.last_cdr_received_at) + " (" + ago(c.last_cdr_received_at) +
      ")" + (cumulative ? " · newest call before " + localTime(cumulative.to) : "")
    : "no CDR received yet";
  const live = q("table.windows").tBodies[0];
  const names = WINDOWS.filter((w) => c.windows[w]);
  live.replaceChildren(...names.map((name) => {
    const w = c.windows[name];
    const tr = document.createElement("tr");
    tr.append(el("td", name), el("td", w.attempts, "num"), el("td", w.answered_by_person, "num"),
      el("td", percent(w.silent_rate), "num"), el("td", percent(w.abandoned_rate), "num"),
      el("td", percent(w.out_of_hours_rate), "num"));
    return tr;
  }));
  const figures = JSON.stringify([cumulative && cumulative.attempts, cumulative && cumulative.to,
    c.firing_alerts, c.profile]);
  const changed = figures !== card.figures;
  card.figures = figures;
  const now = Date.now();
  if ((changed || card.complianceAt === 0) && now - card.complianceAt >= COMPLIANCE_EVERY_MS) {
    card.complianceAt = now;
    api(campaignUrl(c, "compliance")).then((body) => renderCompliance(card, body)).catch(fail);
  }
  if ((changed || now - card.minutesAt >= 6 * MINUTES_EVERY_MS) && now - card.minutesAt >= MINUTES_EVERY_MS) {
    card.minutesAt = now;
    const to = new Date(Math.floor(now / 60000) * 60000 + 60000);
    const from = new Date(to.getTime() - CHART_HOURS * 3600000);
    const range = "&from=" + from.toISOString().replace(".000Z", "Z") +
      "&to=" + to.toISOString().replace(".000Z", "Z");
    api(campaignUrl(c, "minutes") + range).then((body) => renderChart(card, body)).catch(fail);
  }
}

// The current window of each rule: the latest one (calendar days, 30-day periods), the
// only one otherwise (cumulative, worst 24 h).
function currentWindows(windows) {
  const byRule = new Map();
  for (const w of windows) {
    const held = byRule.get(w.rule);
    if (!held || w.end > held.end) byRule.set(w.rule, w);
  }
  return Array.from(byRule.values());
}

function renderCompliance(card, body) {
  const list = card.node.querySelector(".regulatory");
  const windows = currentWindows(body.windows);
  if (windows.length === 0) {
    list.replaceChildren(el("li", "no rate rule in this profile, or no call yet", "muted"));
    return;
  }
  list.replaceChildren(...windows.map((w) => {
    const li = el("li");
    li.dataset.rule = w.rule;
    const noun = w.rule.includes("abandoned") ? NOUNS.abandoned : NOUNS.silent;
    li.append(
      el("span", percent(w.value) + " of cap " + percent(w.cap), "figure " + w.verdict), " ",
      el("span", w.verdict, "badge " + w.verdict), " ",
      el("span", w.rule + " · " + w.window + " " + localTime(w.start) + " → " + localTime(w.end), "muted"));
    let headroom;
    if (w.verdict === "insufficient") headroom = "not judged yet: " + w.reason;
    else if (w.verdict === "violation") headroom = "over the cap: " + w.reason;
    else if (w.headroom < 0) headroom = "no cap to reach";
    else headroom = w.headroom + " more " + noun + " before the cap";
    li.append(el("span", headroom, "headroom"));
    return li;
  }));
}

function renderChart(card, body) {
  const holder = card.node.querySelector(".chart");
  const note = card.node.querySelector(".chart-note");
  const start = new Date(body.from).getTime() / 1000;
  const xs = body.attempts.map((_, i) => start + 60 * i);
  const rule = body.rule;
  const values = body.value || body.attempts.map(() => null);
  const cap = body.attempts.map(() => (rule ? rule.cap : null));
  const total = body.attempts.reduce((sum, n) => sum + n, 0);
  note.textContent = (rule
    ? rule.metric + " rate over the trailing " + rule.window + " (" + rule.id + "), cap " + percent(rule.cap)
    : "no rate rule in this profile") + " · " + total + " calls in the last " + CHART_HOURS + " h";
  const data = [xs, values, cap, body.attempts];
  const width = Math.max(300, holder.clientWidth || card.node.clientWidth - 32);
  if (card.chart) {
    card.chart.setData(data);
    return;
  }
  const rateLabel = rule ? rule.window + " " + rule.metric + " rate" : "rate";
  card.chart = new uPlot({
    width,
    height: 190,
    scales: {
      x: { time: true },
      // Up to 5 × the cap: a trailing window of a few calls can read 100 %; such a spike
      // leaves the top of the chart rather than flattening the cap line.
      rate: { range: (u, min, max) => {
        const cap = rule ? rule.cap : 0.05;
        return [0, Math.max(cap * 2, Math.min(max || 0, cap * 5))];
      } },
      calls: { range: (u, min, max) => [0, Math.max(max || 0, 1)] },
    },
    series: [
      {},
      { label: rateLabel, scale: "rate", stroke: "#b3261e", width: 2, spanGaps: false,
        value: (u, v) => percent(v) },
      { label: "cap", scale: "rate", stroke: "#20232a", dash: [6, 4], width: 1,
        value: (u, v) => percent(v) },
      { label: "calls/min", scale: "calls", stroke: "#7a9cc6", width: 1,
        fill: "rgba(122,156,198,0.15)" },
    ],
    axes: [
      {},
      { scale: "rate", values: (u, ticks) => ticks.map((t) => (t * 100).toFixed(1) + " %"), size: 60 },
      { scale: "calls", side: 1, grid: { show: false } },
    ],
  }, data, holder);
}

// --- sign in / out --------------------------------------------------------------------------

async function start() {
  try {
    const me = await api("/v1/me");
    state.role = me.role;
  } catch (error) {
    return fail(error);
  }
  $("board").classList.toggle("can-ack", canAck());
  run();
}

function show() {
  state.token = sessionStorage.getItem(KEY);
  const signedIn = state.token !== null;
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  if (signedIn) start();
}

function logout() {
  sessionStorage.removeItem(KEY);
  state.token = null;
  state.role = null;
  if (state.controller) state.controller.abort();
  state.controller = null;
  state.lastEventId = null;
  state.alerts.clear();
  state.touched.clear();
  for (const card of state.cards.values()) if (card.chart) card.chart.destroy();
  state.cards.clear();
  $("campaigns").replaceChildren();
  $("alerts").tBodies[0].replaceChildren();
  setConnection("offline");
  show();
}

$("zone").textContent = "times in " + Intl.DateTimeFormat().resolvedOptions().timeZone;
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  $("error").textContent = "";
  show();
});
$("logout").addEventListener("click", logout);
show();
