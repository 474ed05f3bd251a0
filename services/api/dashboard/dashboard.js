// The dashboard's script: a file, not inline, so the CSP needs no 'unsafe-inline'.
"use strict";
const KEY = "cdrwatch-token";
const REFRESH_MS = 2000;
const WINDOWS = ["cumulative", "24h", "1h", "15m"];
const $ = (id) => document.getElementById(id);
let timer = null;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function percent(rate) {
  return rate == null ? "—" : (rate * 100).toFixed(2) + " %";
}

async function getJson(path) {
  const token = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (response.status === 401 || response.status === 403) {
    const error = new Error(response.status === 401 ? "token refused" : "role too low");
    error.auth = true;
    throw error;
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function renderCampaigns(items) {
  const body = $("campaigns").tBodies[0];
  body.replaceChildren();
  for (const c of items) {
    const names = WINDOWS.filter((w) => c.windows[w]);
    for (const name of Object.keys(c.windows)) if (!names.includes(name)) names.push(name);
    if (names.length === 0) names.push(null);
    names.forEach((name, i) => {
      const w = name ? c.windows[name] : null;
      const tr = document.createElement("tr");
      tr.append(
        cell(i === 0 ? c.campaign_id : ""), cell(i === 0 ? c.tenant_id : ""),
        cell(i === 0 ? c.profile : ""),
        cell(i === 0 ? c.status : "", i === 0 ? "status " + c.status : ""),
        cell(name), cell(w && w.attempts, "num"), cell(w && w.answered_by_person, "num"),
        cell(w && percent(w.silent_rate), "num"), cell(w && percent(w.abandoned_rate), "num"),
        cell(w && percent(w.out_of_hours_rate), "num"));
      body.append(tr);
    });
  }
}

function renderAlerts(items) {
  const body = $("alerts").tBodies[0];
  body.replaceChildren();
  for (const a of items) {
    const tr = document.createElement("tr");
    tr.append(
      cell(a.opened_at), cell(a.campaign_id), cell(a.rule),
      cell(a.severity, "status " + a.severity),
      cell(a.value == null ? null : percent(a.value), "num"),
      cell(a.threshold == null ? null : percent(a.threshold), "num"),
      cell(a.numerator + " / " + a.denominator, "num"),
      cell(a.window.start + " → " + a.window.end),
      cell(a.acknowledged_by ? a.acknowledged_by + " at " + a.acknowledged_at : "no"));
    body.append(tr);
  }
}

async function refresh() {
  try {
    const [campaigns, alerts] = await Promise.all([
      getJson("/v1/campaigns?limit=1000"),
      getJson("/v1/alerts?state=firing&limit=200"),
    ]);
    renderCampaigns(campaigns.items);
    renderAlerts(alerts.items);
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    $("error").textContent = error.message;
    if (error.auth) logout();
  }
}

function show() {
  const signedIn = sessionStorage.getItem(KEY) !== null;
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  clearInterval(timer);
  if (signedIn) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}

function logout() {
  sessionStorage.removeItem(KEY);
  show();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  $("error").textContent = "";
  show();
});
$("logout").addEventListener("click", logout);
show();
