// nuropb status page: polls /v1/services and /readyz, and tails events over
// the gateway's WebSocket. No framework and no build step on purpose: the
// page is embedded in the host binary and must work offline. Every value
// from the server goes through textContent, never innerHTML.
"use strict";

const POLL_MS = 2000;
const MAX_EVENTS = 100;
let previous = new Map(); // "tenant/service" -> {requests, failures, hash, at}
const loads = [];         // {at, tenant, service, version, hash, swap}
let ws = null;
const subscribed = new Set();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function shortHash(h) { return (h || "").slice(0, 12); }

function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(0) + " KiB";
  return n + " B";
}

function rate(now, prev, field, dt) {
  if (!prev || dt <= 0) return "–";
  const d = (now[field] || 0) - (prev[field] || 0);
  return d < 0 ? "–" : (d / dt).toFixed(1);
}

function renderServices(services, at) {
  const root = document.getElementById("services");
  root.replaceChildren();
  if (services.length === 0) {
    root.append(el("p", "no services loaded", "muted"));
    return;
  }
  const byTenant = new Map();
  for (const s of services) {
    if (!byTenant.has(s.tenant)) byTenant.set(s.tenant, []);
    byTenant.get(s.tenant).push(s);
  }
  const cols = ["service", "version", "hash", "instances", "busy", "calls/s", "errors/s", "requests", "failures", "memory", "loaded"];
  const numeric = new Set(["instances", "busy", "calls/s", "errors/s", "requests", "failures", "memory"]);
  for (const [tenant, list] of byTenant) {
    root.append(el("h3", "tenant " + tenant));
    const table = el("table");
    const head = el("tr");
    for (const c of cols) head.append(el("th", c, numeric.has(c) ? "num" : ""));
    table.append(head);
    for (const s of list) {
      const key = s.tenant + "/" + s.service;
      const prev = previous.get(key);
      const dt = prev ? (at - prev.at) / 1000 : 0;
      const tr = el("tr");
      tr.dataset.service = key;
      tr.append(el("td", s.service));
      tr.append(el("td", s.version));
      const h = el("td"); h.append(el("code", shortHash(s.hash))); h.title = s.hash + " " + s.file; tr.append(h);
      tr.append(el("td", s.instances, "num"));
      tr.append(el("td", s.busy, "num"));
      tr.append(el("td", rate(s, prev, "requests", dt), "num"));
      tr.append(el("td", rate(s, prev, "failures", dt), "num"));
      tr.append(el("td", s.requests, "num"));
      tr.append(el("td", s.failures, s.failures > 0 ? "num err" : "num"));
      tr.append(el("td", bytes((s.memory_pages || 0) * 65536), "num"));
      tr.append(el("td", new Date(s.loaded_at).toLocaleTimeString()));
      table.append(tr);
    }
    root.append(table);
  }
}

function trackLoads(services, at) {
  const first = previous.size === 0;
  for (const s of services) {
    const key = s.tenant + "/" + s.service;
    const prev = previous.get(key);
    if (first || !prev) {
      loads.push({ at: new Date(s.loaded_at), tenant: s.tenant, service: s.service, version: s.version, hash: s.hash, swap: false });
    } else if (prev.hash !== s.hash) {
      loads.push({ at: new Date(s.loaded_at), tenant: s.tenant, service: s.service, version: s.version, hash: s.hash, swap: true });
    }
    previous.set(key, { requests: s.requests, failures: s.failures, hash: s.hash, at: at });
  }
  loads.sort((a, b) => b.at - a.at);
  loads.splice(20);
  const ul = document.getElementById("loads");
  ul.replaceChildren();
  for (const l of loads) {
    ul.append(el("li", l.at.toLocaleTimeString() + "  " + (l.swap ? "reloaded " : "loaded   ") +
      l.tenant + "/" + l.service + " " + l.version + " " + shortHash(l.hash)));
  }
}

function renderRefusals(refusals) {
  const ul = document.getElementById("refusals");
  ul.replaceChildren();
  if (!refusals || refusals.length === 0) {
    ul.append(el("li", "none", "muted"));
    return;
  }
  for (const r of refusals.slice().reverse().slice(0, 20)) {
    ul.append(el("li", new Date(r.time).toLocaleTimeString() + "  " + r.file + ": " + r.reason, "err"));
  }
}

async function poll() {
  try {
    const resp = await fetch("/v1/services", { cache: "no-store" });
    const body = await resp.json();
    const services = Array.isArray(body) ? body : (body.services || []);
    const at = Date.now();
    renderServices(services, at);
    trackLoads(services, at);
    renderRefusals(body.refusals);
    for (const s of services) subscribe(s.tenant);
    document.getElementById("updated").textContent = "updated " + new Date(at).toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = "cannot reach the host: " + e;
  }
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const badge = document.getElementById("ready");
    badge.textContent = r.ok ? "ready" : "not ready";
    badge.className = "badge " + (r.ok ? "ok" : "bad");
  } catch (e) { /* shown by the services poll */ }
}

// subscribe tails every topic ("#") of a tenant, once per tenant.
function subscribe(tenant) {
  if (!ws || ws.readyState !== WebSocket.OPEN || subscribed.has(tenant)) return;
  subscribed.add(tenant);
  ws.send(JSON.stringify({ type: "subscribe", id: "tail-" + tenant, topics: ["#"], tenant: tenant }));
}

function addEvent(text, cls) {
  const ul = document.getElementById("events");
  const placeholder = ul.querySelector(".muted");
  if (placeholder) placeholder.remove();
  ul.prepend(el("li", text, cls));
  while (ul.children.length > MAX_EVENTS) ul.lastChild.remove();
}

function connect() {
  const badge = document.getElementById("ws");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/v1/ws");
  ws.onopen = () => {
    badge.textContent = "live"; badge.className = "badge ok";
    subscribed.clear();
    for (const key of previous.keys()) subscribe(key.split("/")[0]);
  };
  ws.onmessage = (m) => {
    let f;
    try { f = JSON.parse(m.data); } catch (e) { return; }
    if (f.type === "event") {
      addEvent(new Date().toLocaleTimeString() + "  " + f.tenant + "/" + f.topic + "  " +
        JSON.stringify(f.event) + (f.trace_id ? "  trace " + f.trace_id : ""));
    } else if (f.type === "error") {
      addEvent("error: " + f.error.code + ": " + f.error.message, "err");
    }
  };
  ws.onclose = (e) => {
    badge.textContent = "disconnected (" + e.code + ")"; badge.className = "badge bad";
    setTimeout(connect, 3000);
  };
}

poll();
setInterval(poll, POLL_MS);
connect();
