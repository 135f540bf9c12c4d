// shopmind storefront: plain JavaScript over the public API, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { user: null, token: null, query: "", page: 1, filters: {}, lastRecs: [], recsView: null, nav: 0 };
// Each navigation gets a number; a render whose page was left while it awaited the API stops there.
class Stale extends Error {}
function fresh(nav) { if (nav !== state.nav) throw new Stale(); }

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options = {}) {
  // The shopper's session goes with every call: it lets the page read its own shopper's private parts
  // (explanations, history size) and post their interactions, and nobody else's.
  const headers = { ...(options.headers || {}) };
  if (state.token && !headers["X-Session"]) headers["X-Session"] = state.token;
  const res = await fetch(path, { ...options, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
  return body;
}

function status(text) { $("#search-status").textContent = text; }

// --- shoppers and events ---------------------------------------------------------------------------------
async function loadUsers() {
  const { users } = await api("/storefront/users");
  const select = $("#user");
  select.innerHTML = users.map((u) => `<option value="${esc(u.user_id)}">${esc(u.label)}</option>`).join("");
  const saved = localStorage.getItem("shopmind-user");
  if (saved && users.some((u) => u.user_id === saved)) select.value = saved;
  await setUser(select.value);
  select.addEventListener("change", () => setUser(select.value).then(route));
}

async function setUser(user) {
  state.user = user;
  localStorage.setItem("shopmind-user", user);
  state.token = null;
  const { token } = await api(`/storefront/session?user=${encodeURIComponent(user)}`);
  state.token = token;
}

async function sendEvent(type, itemId, recId) {
  const body = { user_id: state.user, item_id: itemId, type, event_id: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}` };
  if (recId) body.rec_id = recId;
  await api("/events", { method: "POST", headers: { "Content-Type": "application/json", "X-Session": state.token }, body: JSON.stringify(body) });
}

// --- rendering -----------------------------------------------------------------------------------------
function price(p) { return p == null ? "" : `$${Number(p).toFixed(2)}`; }

function card(item, { recId = null, changed = false } = {}) {
  const why = item.explanation ? `<p class="why ${item.explore ? "explore" : ""}">${esc(item.explanation.text)}</p>` : "";
  return `<article class="card ${changed ? "changed" : ""}" data-item="${esc(item.item_id)}" ${recId ? `data-rec="${esc(recId)}"` : ""}>
    <a class="title" href="#/item/${encodeURIComponent(item.item_id)}" data-action="open">${esc(item.title || item.item_id)}</a>
    <span class="meta">${esc(item.brand || "")}${item.category ? " · " + esc(item.category) : ""}</span>
    <span class="price">${price(item.price)}</span>${why}
    <div class="actions">
      <button type="button" class="secondary" data-action="add_to_cart" aria-label="Add ${esc(item.title)} to cart">Add to cart</button>
      <button type="button" data-action="purchase" aria-label="Buy ${esc(item.title)}">Buy</button>
    </div></article>`;
}

async function renderRecs(target, title, extra = "", nav = state.nav) {
  const res = await api(`/recommend/${encodeURIComponent(state.user)}?k=8${extra}`);
  fresh(nav);
  state.recsView = { title, extra };  // an interaction refreshes them in the same context (item, search)
  const before = new Set(state.lastRecs);
  state.lastRecs = res.items.map((i) => i.item_id);
  target.innerHTML = `<h2 id="recs-title">${esc(title)}</h2>
    <p class="meta">${res.known_user ? `${res.history_size} items in this shopper's history` : "New shopper: popular and exploratory picks"} · ${res.took_ms} ms</p>
    <div class="grid" id="recs" aria-labelledby="recs-title">${res.items.map((i) => card(i, { recId: res.rec_id, changed: before.size > 0 && !before.has(i.item_id) })).join("")}</div>`;
  // Tell the server what was shown (impressions feed the exploration bandit).
  sendImpressions(res).catch(() => {});
}

async function sendImpressions(res) {
  const events = res.items.map((i) => ({ user_id: state.user, item_id: i.item_id, type: "impression", rec_id: res.rec_id }));
  if (!events.length) return;
  await api("/events", { method: "POST", headers: { "Content-Type": "application/json", "X-Session": state.token }, body: JSON.stringify({ events }) });
}

function facetBox(name, values) {
  if (!values || !values.length) return "";
  const chosen = state.filters[name];
  return `<fieldset><legend>${esc(name)}</legend>${values.map((v) => `<label>
      <input type="radio" name="f-${esc(name)}" value="${esc(v.value)}" ${chosen === v.value ? "checked" : ""}>
      <span>${esc(v.value)}</span><span class="count">${v.count}</span></label>`).join("")}
    ${chosen ? `<button type="button" class="secondary" data-clear="${esc(name)}">Clear ${esc(name)}</button>` : ""}</fieldset>`;
}

async function renderSearch(nav = state.nav) {
  const main = $("#main");
  const params = new URLSearchParams({ q: state.query, page: state.page, size: 12, user: state.user });
  for (const [k, v] of Object.entries(state.filters)) {
    if (k === "price") {
      const [lo, hi] = v.split("–").map((x) => x.replace("+", ""));
      if (lo) params.set("price_min", lo);
      if (hi) params.set("price_max", hi);
    } else params.set(k, v);
  }
  const res = await api(`/search?${params}`);
  fresh(nav);
  status(`${res.total.toLocaleString()} results${res.corrected ? ` — showing results for “${res.corrected}”` : ""} · ${res.took_ms} ms`);
  const pages = Math.max(1, Math.ceil(Math.min(res.total, 600) / 12));
  main.innerHTML = `<h1>Results for “${esc(res.query)}”${res.corrected ? ` <small class="meta">(did you mean <b>${esc(res.corrected)}</b>?)</small>` : ""}</h1>
    <div class="layout"><form class="facets" aria-label="Filters" id="facets">${Object.entries(res.facets).map(([n, v]) => facetBox(n, v)).join("")}</form>
    <section aria-label="Search results"><div class="grid" id="results">${res.items.map((i) => card(i)).join("") || "<p>No results.</p>"}</div>
    <nav class="pager" aria-label="Result pages">
      <button type="button" class="secondary" data-page="${state.page - 1}" ${state.page <= 1 ? "disabled" : ""}>Previous</button>
      <span>Page ${state.page} of ${pages}</span>
      <button type="button" class="secondary" data-page="${state.page + 1}" ${state.page >= pages ? "disabled" : ""}>Next</button></nav>
    <section id="recs-box" aria-live="polite"></section></section></div>`;
  $("#facets").addEventListener("change", (e) => {
    if (e.target.name?.startsWith("f-")) { state.filters[e.target.name.slice(2)] = e.target.value; state.page = 1; renderSearch(++state.nav).catch(quiet); }
  });
  main.querySelectorAll("[data-clear]").forEach((b) => b.addEventListener("click", () => { delete state.filters[b.dataset.clear]; renderSearch(++state.nav).catch(quiet); }));
  main.querySelectorAll("[data-page]").forEach((b) => b.addEventListener("click", () => { state.page = Number(b.dataset.page); renderSearch(++state.nav).catch(quiet); }));
  await renderRecs($("#recs-box"), "Recommended for you within this search", `&query=${encodeURIComponent(state.query)}`, nav);
}

async function renderHome(nav = state.nav) {
  status("");
  $("#main").innerHTML = `<section id="recs-box" aria-live="polite"><p>Loading recommendations…</p></section>`;
  await renderRecs($("#recs-box"), "Recommended for you", "", nav);
}

async function renderItem(id, nav = state.nav) {
  status("");
  const item = await api(`/items/${encodeURIComponent(id)}`);
  fresh(nav);
  sendEvent("view", id).catch(() => {});
  const k = item.knowledge || {};
  const aspects = (k.positive_aspects || []).map((a) => (typeof a === "string" ? a : a.aspect));
  $("#main").innerHTML = `<article class="item" aria-labelledby="item-title">
      <h1 id="item-title">${esc(item.title)}</h1>
      <p class="meta">${esc(item.brand || "")}${item.category ? " · " + esc(item.category) : ""} · ${item.popularity} shoppers</p>
      <p class="price">${price(item.price)}</p>
      ${item.description ? `<p>${esc(item.description.slice(0, 600))}</p>` : ""}
      <h2>Knowledge card</h2>
      <div class="chips" aria-label="Keywords">${(k.keywords || []).map((w) => `<span class="chip">${esc(w)}</span>`).join("") || "<span class=meta>no keywords</span>"}</div>
      ${aspects.length ? `<p>Reviewers like: ${aspects.map(esc).join(", ")}</p>` : ""}
      <div class="actions item-actions" data-item="${esc(item.item_id)}">
        <button type="button" class="secondary" data-action="add_to_cart">Add to cart</button>
        <button type="button" data-action="purchase">Buy</button></div>
    </article>
    <section><h2>Similar items</h2><div class="grid" id="similar"></div></section>
    <section><h2>Frequently bought together</h2><div class="grid" id="together"></div></section>
    <section id="recs-box" aria-live="polite"></section>`;
  const [sim, together] = await Promise.all([
    api(`/items/${encodeURIComponent(id)}/similar?k=4&method=pipeline`),
    api(`/items/${encodeURIComponent(id)}/similar?k=4&method=covisitation`),
  ]);
  fresh(nav);
  $("#similar").innerHTML = sim.items.map((i) => card(i)).join("") || "<p class=meta>None yet.</p>";
  $("#together").innerHTML = together.items.map((i) => card(i)).join("") || "<p class=meta>Nobody bought it with anything else yet.</p>";
  await renderRecs($("#recs-box"), "Recommended for you", `&item=${encodeURIComponent(id)}`, nav);
}

// --- dashboard -------------------------------------------------------------------------------------------
const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(2)}%`);
const rateCell = (r) => (r && r.value != null ? `${pct(r.value)} <span class="ci">[${pct(r.low)}, ${pct(r.high)}]</span>` : "–");

function onlineTable(title, groups) {
  const rows = Object.entries(groups || {});
  if (!rows.length) return "";
  return `<table><caption>${esc(title)}</caption><thead><tr><th></th><th>impressions</th><th>clicks</th><th>CTR [95% CI]</th>
    <th>lists</th><th>hit rate@k [95% CI]</th><th>purchases</th><th>revenue / impression</th></tr></thead><tbody>
    ${rows.map(([name, m]) => `<tr><td>${esc(name)}</td><td>${m.impressions}</td><td>${m.clicks}</td><td>${rateCell(m.ctr)}</td>
      <td>${m.lists}</td><td>${rateCell(m.hit_rate)}</td><td>${m.purchases}</td>
      <td>${m.revenue_per_impression.value == null ? "–" : Number(m.revenue_per_impression.value).toFixed(4)}</td></tr>`).join("")}</tbody></table>`;
}

// A small inline SVG line chart of CTR and hit rate per time bucket, with the CTR's 95% interval as a band.
function onlineChart(series) {
  const pts = (series || []).filter((p) => p.all.impressions > 0);
  if (pts.length < 2) return `<p class="meta">The plot appears once impressions were attributed in two or more time buckets.</p>`;
  const W = 640, H = 200, L = 44, B = 22, T = 8, R = 8;
  const t0 = pts[0].start, t1 = pts[pts.length - 1].start + pts[pts.length - 1].width;
  const top = Math.max(0.01, ...pts.map((p) => Math.max(p.all.ctr.high || 0, p.all.hit_rate.value || 0)));
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const mid = (p) => p.start + p.width / 2;
  const line = (get) => pts.filter((p) => get(p) != null).map((p) => `${x(mid(p)).toFixed(1)},${y(get(p)).toFixed(1)}`).join(" ");
  const band = pts.map((p) => `${x(mid(p)).toFixed(1)},${y(p.all.ctr.high).toFixed(1)}`).concat(
    pts.slice().reverse().map((p) => `${x(mid(p)).toFixed(1)},${y(p.all.ctr.low).toFixed(1)}`)).join(" ");
  const time = (t) => new Date(t * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const last = pts[pts.length - 1].all;
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="CTR and hit rate over time; latest CTR ${pct(last.ctr.value)}, hit rate ${pct(last.hit_rate.value)}">
    <line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" class="axis"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" class="axis"/>
    <text x="${L - 4}" y="${T + 10}" text-anchor="end">${pct(top)}</text><text x="${L - 4}" y="${H - B}" text-anchor="end">0</text>
    <text x="${L}" y="${H - 6}">${esc(time(t0))}</text><text x="${W - R}" y="${H - 6}" text-anchor="end">${esc(time(t1))}</text>
    <polygon points="${band}" class="band"/>
    <polyline points="${line((p) => p.all.ctr.value)}" class="ctr"/>
    <polyline points="${line((p) => p.all.hit_rate.value)}" class="hit"/></svg>
    <p class="meta"><span class="key ctr"></span> CTR (band: 95% interval) · <span class="key hit"></span> hit rate@${esc(String(state.onlineK || 10))} · per bucket of serving time</p>`;
}

function onlinePanel(o) {
  if (!o) return `<p class="meta">The online evaluation needs a key with scope read_private (or demo mode).</p>`;
  state.onlineK = o.k;
  const m = o.overall;
  const unattributed = Object.values(o.unattributed || {}).reduce((a, b) => a + b, 0);
  return `<div class="kpis"><div class="kpi"><b>${pct(m.ctr.value)}</b>CTR [${pct(m.ctr.low)}, ${pct(m.ctr.high)}]</div>
      <div class="kpi"><b>${pct(m.hit_rate.value)}</b>hit rate@${o.k} [${pct(m.hit_rate.low)}, ${pct(m.hit_rate.high)}]</div>
      <div class="kpi"><b>${m.impressions}</b>impressions · ${m.clicks} clicks</div>
      <div class="kpi"><b>${m.lists}</b>lists shown · ${unattributed} unattributed events</div></div>
    ${onlineChart(o.series)}
    ${onlineTable("By source (what put the item in the list)", o.by_source)}
    ${onlineTable("By ranker version (served artifact)", o.by_version)}
    ${onlineTable("By arm", o.by_arm)}
    ${onlineTable("Exploration slot vs the rest", o.by_slot)}`;
}

function trainerPanel(t) {
  if (!t) return "";
  if (!t.readable) return `<section><h2>Trainer</h2><p class="meta">The trainer's status file could not be read.</p></section>`;
  const when = (s) => (s == null ? "–" : new Date(s * 1000).toLocaleString());
  const score = (v) => (v == null ? "–" : Number(v).toFixed(4));
  const l = t.last;
  const last = l ? `<table><caption>Last run</caption><thead><tr><th></th><th>NDCG@10</th><th>hit@10</th></tr></thead><tbody>
      <tr><td>candidate</td><td>${score(l.candidate?.["ndcg@10"])}</td><td>${score(l.candidate?.["hit@10"])}</td></tr>
      <tr><td>serving</td><td>${score(l.serving?.["ndcg@10"])}</td><td>${score(l.serving?.["hit@10"])}</td></tr></tbody></table>
    <p class="meta">${esc(l.kind || "")} run finished ${esc(when(l.finished))} · ${esc(l.outcome || (l.promoted ? "promoted" : "not promoted"))}${l.reason ? ` (${esc(l.reason)})` : ""} · ${l.cases ?? "–"} cases · ${l.seconds == null ? "–" : Number(l.seconds).toFixed(1)} s${l.error ? ` · error: ${esc(l.error)}` : ""}</p>` : "";
  return `<section aria-labelledby="trainer-h"><h2 id="trainer-h">Trainer</h2>
    <div class="kpis"><div class="kpi"><b>${esc(t.state || "unknown")}</b>${esc(t.step || "")}</div>
      <div class="kpi"><b>${t.runs ?? "–"}</b>runs · ${t.promotions ?? "–"} promotions · ${t.failures ?? "–"} failures</div>
      <div class="kpi"><b>${t.lag_records ?? "–"}</b>records not yet trained on</div>
      <div class="kpi"><b>${esc(when(t.updated))}</b>last update</div></div>${last}</section>`;
}

let liveTimer = null;
async function renderDashboard(nav = state.nav) {
  status("");
  const data = await api("/storefront/dashboard");
  fresh(nav);
  const rows = (table) => table.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("");
  $("#main").innerHTML = `<h1>Dashboard</h1>
    <section aria-labelledby="live-h"><h2 id="live-h">Live traffic (last minute)</h2><div class="kpis" id="live"></div>
      <table id="routes"><thead><tr><th>route</th><th>requests</th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody></tbody></table></section>
    <section aria-labelledby="cat-h"><h2 id="cat-h">Catalog and events</h2>
      <table><tbody>${rows(Object.entries(data.catalog))}</tbody></table>
      <table id="event-types"><caption>Events by type</caption><thead><tr>${data.events.header.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead>
        <tbody>${rows(data.events.rows)}</tbody></table></section>
    <section aria-labelledby="online-h"><h2 id="online-h">Online (from the shop's impressions, clicks and purchases)</h2>
      <div id="online">${onlinePanel(data.online)}</div></section>
    <div id="trainer">${trainerPanel(data.trainer)}</div>
    ${data.reports.map((r) => `<section><h2>${esc(r.title)}</h2>
        <table><thead><tr>${r.header.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows(r.rows)}</tbody></table>
        ${r.note ? `<p class="meta">${esc(r.note)}</p>` : ""}
        ${r.plot ? `<img class="plot" src="${esc(r.plot)}" alt="${esc(r.title)} plot" loading="lazy">` : ""}</section>`).join("")}`;
  let ticks = 0;
  const tick = async () => {
    if (!$("#live")) { clearInterval(liveTimer); return; }
    if (++ticks % 5 === 0) {  // the online panel and the trainer every 10 s
      const d = await api("/storefront/dashboard");
      if ($("#online")) { $("#online").innerHTML = onlinePanel(d.online); $("#trainer").innerHTML = trainerPanel(d.trainer); }
    }
    const s = await api("/stats");
    $("#live").innerHTML = `<div class="kpi"><b>${s.live.rate_per_s}</b>requests/s</div>
      <div class="kpi"><b>${s.live.requests}</b>requests in ${s.live.window_s} s</div>
      <div class="kpi"><b>${s.cache ? Math.round(100 * s.cache.hits / Math.max(1, s.cache.hits + s.cache.misses)) : 0}%</b>ranked-pool cache hits</div>`;
    $("#routes tbody").innerHTML = Object.entries(s.live.routes).map(([r, v]) => `<tr><td>${esc(r)}</td><td>${v.requests}</td><td>${v.p50_ms}</td><td>${v.p99_ms}</td></tr>`).join("");
  };
  clearInterval(liveTimer);
  await tick();
  liveTimer = setInterval(() => tick().catch(() => {}), 2000);
}

// --- routing and events ----------------------------------------------------------------------------------
function quiet(err) { if (!(err instanceof Stale)) status(`Something went wrong: ${err.message}`); }

async function route() {
  const hash = location.hash || "#/";
  const nav = ++state.nav;
  try {
    if (hash.startsWith("#/item/")) await renderItem(decodeURIComponent(hash.slice(7)), nav);
    else if (hash.startsWith("#/dashboard")) await renderDashboard(nav);
    else if (hash.startsWith("#/search")) {
      const p = new URLSearchParams(hash.split("?")[1] || "");
      state.query = p.get("q") || "";
      $("#q").value = state.query;
      await renderSearch(nav);
    } else await renderHome(nav);
    // Move focus to the new content for keyboard and screen-reader users, but never out of the search box:
    // the shopper may still be typing (results as you type).
    if (document.activeElement !== $("#q")) $("#main").focus({ preventScroll: true });
  } catch (err) {
    if (err instanceof Stale) return;  // the shopper has moved on; the newer page renders itself
    $("#main").innerHTML = `<p role="alert">Something went wrong: ${esc(err.message)}</p>`;
  }
}

document.addEventListener("click", async (e) => {
  const button = e.target.closest("[data-action]");
  if (!button) return;
  const holder = button.closest("[data-item]");
  if (!holder) return;
  const action = button.dataset.action;
  const recId = holder.dataset.rec;
  if (action === "open") { if (recId) sendEvent("click", holder.dataset.item, recId).catch(() => {}); return; }
  e.preventDefault();
  button.disabled = true;
  try {
    await sendEvent(action, holder.dataset.item, recId);
    status(action === "purchase" ? "Bought — recommendations updated" : "Added to cart — recommendations updated");
    const box = $("#recs-box");
    if (box && state.recsView) await renderRecs(box, state.recsView.title, state.recsView.extra);
  } catch (err) { if (!(err instanceof Stale)) status(`Could not record that: ${err.message}`); }
  finally { button.disabled = false; }
});

let typing = null;
$("#q").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    const q = $("#q").value.trim();
    if (q.length >= 2 && q !== state.query) { state.page = 1; state.filters = {}; location.hash = `#/search?q=${encodeURIComponent(q)}`; }
  }, 250);
});
$("#search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(typing);  // Enter already searches: a late as-you-type search must not pull the page back
  const q = $("#q").value.trim();
  if (q) { state.page = 1; state.filters = {}; location.hash = `#/search?q=${encodeURIComponent(q)}`; }
});
window.addEventListener("hashchange", route);
loadUsers().then(route).catch((err) => { $("#main").innerHTML = `<p role="alert">Cannot reach the API: ${esc(err.message)}</p>`; });
