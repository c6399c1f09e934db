// The redline dashboard: renders the snapshots that DashboardApp pushes over Server-Sent
// Events. Hand-written, no dependencies. Every value from the server reaches the page through
// textContent, dataset or numeric SVG coordinates, never as markup.
(() => {
  "use strict";

  const HISTORY = 120; // points kept per sparkline (2 min at one snapshot a second)
  const MAX_RETRY_MS = 30000;
  const VITALS = ["LCP", "INP", "CLS", "FCP", "TTFB"];
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const history = { rps: [], errors: [], p99: [], loop: [] };
  const $ = (id) => document.getElementById(id);

  // -- formatting -------------------------------------------------------------------------

  const missing = (x) => x === null || x === undefined || Number.isNaN(x);
  const dash = "—";

  function digits(x) {
    const a = Math.abs(x);
    return a >= 100 ? 0 : a >= 10 ? 1 : 2;
  }

  function seconds(s) {
    if (missing(s)) return dash;
    if (s === 0) return "0 ms";
    if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
    if (s < 1) return `${(s * 1e3).toFixed(digits(s * 1e3))} ms`;
    return `${s.toFixed(2)} s`;
  }

  function bytes(b) {
    if (missing(b)) return dash;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) {
      b /= 1024;
      i += 1;
    }
    return `${b.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }

  const rate = (r, unit) => (missing(r) ? dash : `${r.toFixed(digits(r))} ${unit}`);
  const percent = (x) => (missing(x) ? dash : `${(x * 100).toFixed(x > 0 && x < 0.1 ? 2 : 1)} %`);
  const count = (n) => (missing(n) ? dash : Math.round(n).toLocaleString("en"));
  const clock = (t) => (missing(t) ? dash : new Date(t * 1000).toLocaleTimeString());

  function slope(bps) {
    if (missing(bps)) return dash;
    return `${bps >= 0 ? "+" : "−"}${bytes(Math.abs(bps) * 3600)}/h`;
  }

  function vital(name, value) {
    if (missing(value)) return dash;
    return name === "CLS" ? value.toFixed(3) : `${Math.round(value)} ms`;
  }

  function labels(map) {
    const parts = Object.entries(map || {}).map(([k, v]) => (k === "tier" ? v : `${k}=${v}`));
    return parts.length ? parts.join(" ") : "(all)";
  }

  // -- DOM helpers ------------------------------------------------------------------------

  function cell(text, className, field) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    if (field) td.dataset.field = field;
    return td;
  }

  function row(cells, testid) {
    const tr = document.createElement("tr");
    if (testid) tr.dataset.testid = testid;
    tr.append(...cells);
    return tr;
  }

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  function setRated(id, text, rating) {
    const node = $(id);
    node.textContent = text;
    node.className = `${node.className.split(" ")[0]} ${rating || ""}`.trim();
    node.dataset.rating = rating || "";
  }

  // Shows a panel's content, or its "no data: how to enable" hint; true when there is data.
  function panel(name, data) {
    const available = Boolean(data && data.available);
    const nodata = $(`nodata-${name}`);
    nodata.hidden = available;
    $(`body-${name}`).hidden = !available;
    if (!available) nodata.textContent = (data && data.hint) || "no data";
    return available;
  }

  function push(series, value) {
    series.push(missing(value) ? null : value);
    if (series.length > HISTORY) series.shift();
  }

  // A line (and the area under it) through the values, scaled to the SVG's viewBox: x by
  // index, or by ``xs`` (times) when given; y from 0, or from the lowest value when
  // ``fromZero`` is false (memory: its trend matters, not its distance from 0). Gaps (null)
  // break the line. Only numbers go into the path.
  function sparkline(svg, values, xs, fromZero = true) {
    const box = svg.viewBox.baseVal;
    const width = box.width;
    const height = box.height;
    const known = values.filter((v) => !missing(v));
    svg.replaceChildren();
    if (known.length < 2) return;
    const top = Math.max(...known);
    const low = fromZero ? Math.min(0, ...known) : Math.min(...known);
    const span = top - low;
    const first = xs ? xs[0] : 0;
    const last = xs ? xs[xs.length - 1] : values.length - 1;
    const x = (i) => (((xs ? xs[i] : i) - first) / (last - first || 1)) * width;
    const y = (v) => (span ? height - 1 - ((v - low) / span) * (height - 2) : height / 2);
    let line = "";
    let area = "";
    let start = null;
    let previous = null;
    const close = () => `L${x(previous).toFixed(1)},${height}L${x(start).toFixed(1)},${height}Z`;
    values.forEach((v, i) => {
      if (missing(v)) {
        if (start !== null) area += close();
        start = null;
        return;
      }
      const point = `${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      line += `${start === null ? "M" : "L"}${point}`;
      area += `${start === null ? "M" : "L"}${point}`;
      if (start === null) start = i;
      previous = i;
    });
    if (start !== null) area += close();
    const ns = "http://www.w3.org/2000/svg";
    const fill = document.createElementNS(ns, "path");
    fill.setAttribute("class", "area");
    fill.setAttribute("d", area);
    const stroke = document.createElementNS(ns, "path");
    stroke.setAttribute("class", "line");
    stroke.setAttribute("d", line);
    svg.append(fill, stroke);
  }

  // -- panels -----------------------------------------------------------------------------

  function renderHttp(http, cumulative) {
    const available = panel("http", http);
    if (!available) {
      for (const id of ["rps", "error-rate", "p99", "in-flight"]) setText(id, dash);
      for (const id of ["requests", "errors", "p50-p95", "total"]) setText(id, "");
      push(history.rps, null);
      push(history.errors, null);
      push(history.p99, null);
      return;
    }
    setText("rps", rate(http.rps, "req/s"));
    setText("requests", `${count(http.requests)} requests${cumulative ? " since start" : " in window"}`);
    const errorRate = $("error-rate");
    errorRate.textContent = percent(http.error_rate);
    errorRate.className = `big ${http.error_rate > 0 ? "bad" : ""}`.trim();
    setText("errors", `${count(http.errors)} 5xx responses`);
    setText("p99", seconds(http.latency.p99));
    setText("p50-p95", `p50 ${seconds(http.latency.p50)} · p95 ${seconds(http.latency.p95)}`);
    setText("in-flight", count(http.in_flight));
    setText("total", `${count(http.total)} requests since start`);
    push(history.rps, http.rps);
    push(history.errors, http.error_rate);
    push(history.p99, http.latency.p99);

    const body = $("routes").tBodies[0];
    const rows = http.routes.map((r) => {
      const tr = row(
        [
          cell(r.route, "code", "route"),
          cell(r.method, "", "method"),
          cell(rate(r.rps, "/s"), "num", "rps"),
          cell(count(r.requests), "num", "requests"),
          cell(`${count(r.errors)} (${percent(r.error_rate)})`, "num errors", "errors"),
          cell(seconds(r.p50), "num", "p50"),
          cell(seconds(r.p95), "num", "p95"),
          cell(seconds(r.p99), "num", "p99"),
          cell(count(r.total), "num", "total"),
        ],
        "route-row",
      );
      tr.dataset.route = r.route;
      tr.dataset.method = r.method;
      tr.dataset.total = String(r.total);
      if (r.errors > 0) tr.className = "error";
      return tr;
    });
    body.replaceChildren(...rows);
    let note = http.routes.length ? "" : "no request yet";
    if (http.routes_hidden) note = `${http.routes_hidden} quieter routes not shown`;
    setText("routes-note", note);
  }

  function renderCache(cache) {
    if (!panel("cache", cache)) return;
    $("cache-tiers").tBodies[0].replaceChildren(
      ...cache.tiers.map((t) => {
        const tr = row(
          [
            cell(labels(t.labels), "", "tier"),
            cell(percent(t.hit_ratio), "num", "hit-ratio"),
            cell(count(t.hits), "num", "hits"),
            cell(count(t.misses), "num", "misses"),
            cell(percent(t.hit_ratio_total), "num", "hit-ratio-total"),
          ],
          "cache-tier",
        );
        tr.dataset.tier = labels(t.labels);
        return tr;
      }),
    );
    const chips = cache.breakers.map((b) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = `${labels(b.labels)}: `;
      const state = document.createElement("span");
      state.textContent = b.state.replace("_", "-");
      state.className = `rating ${b.state}`;
      li.dataset.testid = "breaker";
      li.dataset.state = b.state;
      li.append(name, state);
      return li;
    });
    if (!chips.length) {
      const li = document.createElement("li");
      li.textContent = "no breaker reported";
      li.className = "muted";
      chips.push(li);
    }
    $("breakers").replaceChildren(...chips);
  }

  function renderDb(db) {
    if (!panel("db", db)) return;
    $("db-engines").tBodies[0].replaceChildren(
      ...db.engines.map((e) => {
        const usage = cell(percent(e.usage_ratio), "num", "usage");
        if (!missing(e.usage_ratio)) usage.classList.add(e.usage_ratio >= 0.8 ? "poor" : "good");
        const pool = missing(e.pool_size)
          ? count(e.checked_out)
          : `${count(e.checked_out)} / ${count(e.pool_size)}${e.overflow ? ` +${count(e.overflow)}` : ""}`;
        const tr = row(
          [
            cell(e.engine, "", "engine"),
            cell(rate(e.qps, "/s"), "num", "qps"),
            cell(seconds(e.p99), "num", "p99"),
            cell(count(e.errors), "num", "errors"),
            cell(pool, "num", "pool"),
            usage,
          ],
          "db-engine",
        );
        tr.dataset.engine = e.engine;
        return tr;
      }),
    );
    const hint = $("slow-hint");
    hint.hidden = !db.slow_hint;
    hint.textContent = db.slow_hint || "";
    $("slow-queries").hidden = !db.slow_queries.length;
    $("slow-queries").tBodies[0].replaceChildren(
      ...db.slow_queries.map((q) =>
        row(
          [
            cell(q.statement, "code", "statement"),
            cell(count(q.count), "num", "runs"),
            cell(seconds(q.max_seconds), "num", "max"),
            cell(seconds(q.mean_seconds), "num", "mean"),
            cell(clock(q.last_seen), "", "last-seen"),
          ],
          "slow-query",
        ),
      ),
    );
  }

  function renderMemory(memory, leak) {
    if (panel("memory", memory)) {
      setText("rss", bytes(memory.rss_bytes));
      const times = memory.trend.map((p) => p[0]);
      const values = memory.trend.map((p) => p[1]);
      sparkline($("spark-rss"), values, times, false);
      sparkline($("chart-rss"), values, times, false);
      if (values.length) {
        const span = times[times.length - 1] - times[0];
        setText(
          "rss-range",
          `${bytes(Math.min(...values))} – ${bytes(Math.max(...values))} over the last ${Math.round(span)} s` +
            (memory.workers.length > 1 ? ` (sum of ${memory.workers.length} workers)` : ""),
        );
      }
    } else {
      setText("rss", dash);
    }
    const verdict = leak && leak.available ? leak.verdict : null;
    setRated("leak-verdict", verdict || "not watched", verdict || "");
    if (!panel("leak", leak)) return;
    const rss = new Map((memory.workers || []).map((w) => [w.pid, w.rss_bytes]));
    $("workers").tBodies[0].replaceChildren(
      ...leak.workers.map((w) => {
        const v = cell(w.verdict, `rating ${w.verdict}`, "verdict");
        return row(
          [
            cell(w.pid === null ? "this process" : `pid ${w.pid}`, "", "worker"),
            cell(bytes(rss.get(w.pid)), "num", "rss"),
            v,
            cell(slope(w.slope_bytes_per_second), "num", "slope"),
          ],
          "worker",
        );
      }),
    );
  }

  function renderLoop(loop) {
    const available = panel("loop", loop);
    setText("loop-p99", available ? seconds(loop.p99_seconds) : dash);
    setText(
      "loop-max",
      available ? `max ${seconds(loop.max_seconds)} · ${count(loop.ticks)} ticks` : "",
    );
    push(history.loop, available ? loop.p99_seconds : null);
    if (!available) return;
    setText("loop-p50-value", seconds(loop.p50_seconds));
    setText("loop-p99-value", seconds(loop.p99_seconds));
    setText("loop-max-value", seconds(loop.max_seconds));
    setText("loop-current", seconds(loop.current_max_seconds));
    setText("loop-stalls", count(loop.stalls));
  }

  function renderVitals(vitals) {
    if (!panel("vitals", vitals)) return;
    const hint = $("vitals-hint");
    hint.hidden = !vitals.hint;
    hint.textContent = vitals.hint || "";
    $("vitals").tBodies[0].replaceChildren(
      ...vitals.pages.map((p) => {
        const views = Math.max(0, ...Object.values(p.metrics).map((m) => m.count));
        const cells = VITALS.map((name) => {
          const m = p.metrics[name];
          const td = cell(m ? vital(name, m.p75) : dash, `num ${m ? m.rating : ""}`.trim(), name);
          if (m) {
            td.dataset.rating = m.rating;
            td.title = `${m.rating.replace("-", " ")}, ${m.count} page views`;
          }
          return td;
        });
        const tr = row([cell(p.page, "code", "page"), ...cells, cell(count(views), "num", "views")], "vitals-row");
        tr.dataset.page = p.page;
        return tr;
      }),
    );
  }

  function render(snapshot) {
    document.body.dataset.seq = String(snapshot.seq);
    if (snapshot.title && $("title").textContent !== snapshot.title) {
      $("title").textContent = snapshot.title;
      document.title = `${snapshot.title} · redline dashboard`;
    }
    const w = snapshot.window;
    setText("window", w.cumulative ? "since start (first reading)" : `last ${w.seconds.toFixed(1)} s`);
    setText("updated", `updated ${clock(snapshot.time)}`);
    $("failure").hidden = true;
    renderHttp(snapshot.http, w.cumulative);
    renderCache(snapshot.cache);
    renderDb(snapshot.db);
    renderMemory(snapshot.memory, snapshot.leak);
    renderLoop(snapshot.loop);
    renderVitals(snapshot.vitals);
    sparkline($("spark-rps"), history.rps);
    sparkline($("spark-errors"), history.errors);
    sparkline($("spark-p99"), history.p99);
    sparkline($("spark-loop"), history.loop);
  }

  // -- the stream -------------------------------------------------------------------------

  let source = null;
  let timer = null;
  let retry = 1000;

  function status(state) {
    const node = $("status");
    node.textContent = state;
    node.className = `status ${state}`;
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(connect, retry);
    retry = Math.min(retry * 2, MAX_RETRY_MS);
  }

  function connect() {
    clearTimeout(timer);
    if (source) source.close();
    source = new EventSource(`${base}api/stream`);
    source.addEventListener("snapshot", (event) => {
      retry = 1000;
      status("live");
      render(JSON.parse(event.data));
    });
    source.addEventListener("failure", (event) => {
      const node = $("failure");
      node.textContent = `snapshot failed: ${JSON.parse(event.data)}`;
      node.hidden = false;
    });
    // The server ends every stream after a while, and on shutdown: reconnect at once in
    // the first case, with back-off in the second.
    source.addEventListener("bye", (event) => {
      source.close();
      if (JSON.parse(event.data).reason === "shutdown") {
        status("reconnecting");
        later();
      } else {
        connect();
      }
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        status("offline");
        later();
      } else {
        status("reconnecting");
      }
    });
  }

  connect();
})();
