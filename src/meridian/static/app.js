// meridian dashboard: plain JavaScript, no build step, no dependencies.
// The master key lives in sessionStorage (this tab only) and goes out as the x-api-key
// header of same-origin JSON requests; every value from the server is inserted as text.
"use strict";

(function () {
  const KEY = "meridian.key";
  const WINDOW = "meridian.window";
  const REFRESH_MS = 30000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let timer = null;

  // ------------------------------------------------------------------ formatting

  function compact(n) {
    if (n === null || n === undefined) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (n / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(n * 100) / 100);
  }
  const grouped = (n) => (n === null || n === undefined ? "–" : n.toLocaleString());
  const usd = (n) => (n === null || n === undefined ? "–"
    : "$" + n.toLocaleString(undefined, { minimumFractionDigits: n < 1 ? 4 : 2, maximumFractionDigits: n < 1 ? 4 : 2 }));
  const ms = (n) => (n === null || n === undefined ? "–"
    : n >= 10000 ? (n / 1000).toFixed(1) + " s" : Math.round(n).toLocaleString() + " ms");
  const when = (ts) => new Date(ts * 1000).toLocaleString(undefined,
    { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });

  function tickLabel(ts, step) {
    const d = new Date(ts * 1000);
    if (step >= 3600) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
      + (step < 43200 ? " " + d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "");
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function fillTable(id, rows, cells, empty) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr", null, "empty");
      const td = el("td", empty);
      td.colSpan = $(id).querySelectorAll("thead th").length;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const row of rows) {
      const tr = el("tr");
      for (const c of cells(row)) {
        const td = c instanceof Node ? el("td") : el("td", c[0], c[1]);
        if (c instanceof Node) td.append(c);
        tr.append(td);
      }
      body.append(tr);
    }
  }

  // ------------------------------------------------------------------ charts

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // A stacked bar chart: one bar per time bucket, one colour per group.
  function renderChart(fig, series, metric) {
    const plot = fig.querySelector(".plot");
    const legend = fig.querySelector(".legend");
    plot.replaceChildren();
    legend.replaceChildren();
    const W = 640, H = 220, L = 52, R = 10, T = 12, B = 26;
    const pw = W - L - R, ph = H - T - B, n = series.buckets;
    const totals = new Array(n).fill(0);
    for (const g of series.groups) g[metric].forEach((v, i) => { totals[i] += v; });
    const grand = totals.reduce((a, b) => a + b, 0);
    fig.dataset.total = String(grand);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": fig.querySelector("figcaption").textContent });
    const max = niceMax(Math.max(0, ...totals));
    for (let t = 0; t <= 4; t++) {
      const y = T + ph - (ph * t) / 4;
      chart.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: t ? "grid" : "axis" }));
      chart.append(svg("text", { x: L - 6, y: y + 4, class: "ylabel" }, compact((max * t) / 4)));
    }
    const bw = pw / n, gap = bw > 4 ? Math.min(2, bw * 0.15) : 0;
    series.groups.forEach((g, gi) => {
      g[metric].forEach((v, i) => {
        if (!v) return;
        const below = series.groups.slice(0, gi).reduce((a, o) => a + o[metric][i], 0);
        const h = (v / max) * ph, y = T + ph - ((below / max) * ph) - h;
        const r = svg("rect", { x: L + i * bw + gap / 2, y: y, width: Math.max(bw - gap, 0.5),
          height: Math.max(h, 0.5), class: `bar c${gi % 8}` });
        r.append(svg("title", {}, `${g.name}: ${grouped(v)} ${metric} · `
          + tickLabel(series.start + i * series.step, series.step)));
        chart.append(r);
      });
    });
    const ticks = 6;
    for (let k = 0; k <= ticks; k++) {
      const i = Math.round((k * n) / ticks);
      const x = L + i * bw;
      // The end labels hang inwards so they are not clipped at the edges.
      const anchor = k === 0 ? "start" : k === ticks ? "end" : "middle";
      chart.append(svg("text", { x: x, y: H - 8, class: "xlabel", "text-anchor": anchor },
        tickLabel(series.start + i * series.step, series.step)));
    }
    if (!grand) {
      chart.append(svg("text", { x: L + pw / 2, y: T + ph / 2, class: "nodata" },
        "no requests in this window"));
    }
    plot.append(chart);
    series.groups.forEach((g, gi) => {
      const sum = g[metric].reduce((a, b) => a + b, 0);
      if (!sum) return;
      const item = el("span", null, "item");
      item.append(el("span", null, `swatch c${gi % 8}`), el("span", g.name, "name"),
        el("span", compact(sum), "muted"));
      legend.append(item);
    });
  }

  // ------------------------------------------------------------------ rendering

  function card(label, value, sub) {
    const c = el("div", null, "card");
    c.append(el("div", label, "label"), el("div", value, "value"));
    if (sub) c.append(el("div", sub, "muted"));
    return c;
  }

  function render(d) {
    const t = d.totals;
    const inflight = Object.values(d.in_flight || {}).reduce((a, b) => a + b, 0);
    const errPct = t.requests ? ((100 * t.errors) / t.requests).toFixed(1) + "% of requests" : "";
    $("cards").replaceChildren(
      card("Requests", grouped(t.requests), $("window").selectedOptions[0].textContent),
      card("Errors", grouped(t.errors), errPct),
      card("Input tokens", compact(t.input_tokens + t.cache_read_tokens + t.cache_creation_tokens),
        `${compact(t.cache_read_tokens)} from cache`),
      card("Output tokens", compact(t.output_tokens), ""),
      card("Estimated cost", usd(t.cost_usd), "at API list prices"),
      card("In flight", grouped(inflight), "right now"),
    );

    fillTable("providers", d.providers, (p) => {
      const badge = el("span", p.ready ? "ready" : "not ready", p.ready ? "badge ok" : "badge bad");
      return [[p.name], [p.type, "muted"], badge, [p.reason],
        [p.queue_depth ?? "–", "num"], [p.in_flight ?? "–", "num"],
        [p.limited_until ? when(p.limited_until) : "–", p.limited_until ? "warn" : ""]];
    }, "no providers configured");

    const windows = d.providers.flatMap((p) => ((p.status || {}).rate_limits || [])
      .map((w) => ({ provider: p.name, ...w })));
    fillTable("windows", windows, (w) => {
      const used = w.utilization === null || w.utilization === undefined ? null : w.utilization;
      return [[w.provider], [w.window.replace(/_/g, "-")],
        [used === null ? "–" : Math.round(used * 100) + "%", used >= 0.8 ? "num warn" : "num"],
        [w.status || "–", w.status === "rejected" ? "warn" : ""],
        [w.resets_at ? when(w.resets_at) : "–"]];
    }, "no usage windows reported (a claude.ai login reports them with each answer)");

    const live = d.providers.filter((p) => p.status && p.status.processes)
      .map((p) => ({ provider: p.name, ...p.status.processes }));
    fillTable("processes", live, (p) => [[p.provider], [p.busy, "num"], [p.idle, "num"],
      [p.spares, "num"], [p.limit, "num"], [p.idle_rss_mb, "num"], [p.hits, "num"],
      [p.misses, "num"], [p.spawns, "num"],
      [Object.entries(p.evictions || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–"]],
      "no provider runs processes");

    fillTable("deployments", d.deployments, (s) => {
      const cls = s.state === "open" ? "badge bad" : s.state === "half_open" ? "badge warn" : "badge ok";
      return [[`${s.provider}/${s.model}`], el("span", s.state.replace("_", "-"), cls),
        [s.failures, "num"], [s.last_error || "–"],
        [s.state === "open" ? when(s.open_until) : "–", s.state === "open" ? "warn" : ""]];
    }, "every deployment is healthy");

    for (const fig of document.querySelectorAll("figure.chart")) {
      renderChart(fig, d.series[fig.dataset.series], fig.dataset.metric);
    }

    fillTable("latency", d.latency, (r) => [[r.alias, r.alias === "all" ? "strong" : ""],
      [grouped(r.count), "num"], [ms(r.p50_ms), "num"], [ms(r.p90_ms), "num"], [ms(r.p99_ms), "num"],
      [ms(r.ttft_p50_ms), "num"], [ms(r.ttft_p90_ms), "num"]], "no successful calls yet");

    fillTable("keys", d.keys, (r) => [[r.key], [grouped(r.requests), "num"],
      [grouped(r.errors), "num"], [compact(r.input_tokens + r.cache_read_tokens + r.cache_creation_tokens), "num"],
      [compact(r.output_tokens), "num"], [usd(r.cost_usd) + (r.unpriced ? "*" : ""), "num"]],
      "no usage in this window");

    fillTable("errors", d.errors, (e) => [[when(e.ts)], [e.status, "num"], [e.error_type || "–"],
      [e.alias || "–"], [e.provider || "–"], [e.key_name || "–"],
      [e.final ? "answered" : "retried", e.final ? "" : "muted"], [e.request_id, "mono"]],
      "no errors in this window");

    $("updated").textContent = "updated " + new Date(d.now * 1000).toLocaleTimeString();
    document.body.dataset.loaded = String(Date.now());
  }

  // ------------------------------------------------------------------ session

  function showLogin(message) {
    clearInterval(timer);
    timer = null;
    $("dashboard").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "login";
    $("key-input").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("controls").hidden = false;
    document.body.dataset.state = "dashboard";
    if (!timer) timer = setInterval(load, REFRESH_MS);
  }

  async function load() {
    const key = sessionStorage.getItem(KEY);
    if (!key) return showLogin("");
    let resp;
    try {
      resp = await fetch("ui/api/overview?window=" + encodeURIComponent($("window").value),
        { headers: { "x-api-key": key }, cache: "no-store", credentials: "omit" });
    } catch (err) {
      $("load-error").textContent = "The gateway did not answer: " + err;
      $("load-error").hidden = false;
      return;
    }
    if (resp.status === 401) {
      sessionStorage.removeItem(KEY);
      return showLogin("That key was not accepted: the dashboard needs the master key.");
    }
    if (!resp.ok) {
      $("load-error").textContent = `The gateway answered HTTP ${resp.status}.`;
      $("load-error").hidden = false;
      return;
    }
    $("load-error").hidden = true;
    showDashboard();
    render(await resp.json());
  }

  function init() {
    // /ui#key=... : the fragment never reaches the server; take it and drop it from the URL.
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.get("key")) {
      sessionStorage.setItem(KEY, hash.get("key"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    const saved = sessionStorage.getItem(WINDOW);
    if (saved && [...$("window").options].some((o) => o.value === saved)) $("window").value = saved;
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      $("key-input").value = "";
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      load();
    });
    $("window").addEventListener("change", () => {
      sessionStorage.setItem(WINDOW, $("window").value);
      load();
    });
    $("refresh").addEventListener("click", load);
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showLogin("Logged out.");
    });
    if (sessionStorage.getItem(KEY)) load(); else showLogin("");
  }

  document.addEventListener("DOMContentLoaded", init);
})();
