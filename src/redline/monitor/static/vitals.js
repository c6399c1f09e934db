/* redline Web Vitals beacon: see redline/monitor/_vitals.py. */
(() => {
  "use strict";
  const PO = window.PerformanceObserver, perf = performance;
  if (!PO || !perf.getEntriesByType) return;
  const url = document.currentScript?.dataset.endpoint || "/_redline/vitals";
  const nav = perf.getEntriesByType("navigation")[0];
  const t0 = nav?.activationStart || 0;
  const navType = t0 > 0 ? "prerender" : nav ? nav.type : "navigate";
  const since = (t) => Math.max(t - t0, 0);
  // Paints after the page was first hidden are not what the visitor saw.
  let hiddenAt = document.visibilityState === "hidden" ? 0 : Infinity;
  // The first hide ends the page view: sent once, never again (no second INP on return).
  let ended = false;
  const queue = [], sent = {}, drains = [];
  const put = (name, value) => {
    if (ended || sent[name] || value < 0) return;
    sent[name] = 1;
    queue.push({ name, value, id: Math.random().toString(36).slice(2) });
  };
  // Observer callbacks run late: a drain takes the entries not delivered yet.
  const observe = (type, each, options) => {
    if (!(PO.supportedEntryTypes || []).includes(type)) return false;
    const o = new PO((list) => list.getEntries().forEach(each));
    o.observe({ type, buffered: true, ...options });
    drains.push(() => o.takeRecords().forEach(each));
    return true;
  };

  if (nav?.responseStart > 0) put("TTFB", since(nav.responseStart));
  observe("paint", (e) => {
    if (e.name === "first-contentful-paint" && e.startTime < hiddenAt) put("FCP", since(e.startTime));
  });
  let lcp = -1;
  observe("largest-contentful-paint", (e) => {
    if (e.startTime < hiddenAt) lcp = since(e.startTime);
  });
  const endLcp = () => {
    drains.forEach((d) => d());
    put("LCP", lcp);
  };
  for (const t of ["keydown", "click"]) addEventListener(t, () => setTimeout(endLcp), { once: true, capture: true });

  let cls = 0, win = 0, first = -Infinity, last = -Infinity;
  const hasCls = observe("layout-shift", (e) => {
    if (e.hadRecentInput) return;
    if (e.startTime - last >= 1000 || e.startTime - first >= 5000) win = 0, first = e.startTime;
    last = e.startTime;
    cls = Math.max(cls, (win += e.value));
  });

  const worst = new Map();
  const onEvent = (e) => {
    const k = e.interactionId;
    if (k && !(worst.get(k) >= e.duration)) worst.set(k, e.duration);
  };
  observe("event", onEvent, { durationThreshold: 40 });
  observe("first-input", onEvent);

  const onHidden = () => {
    if (ended) return;
    hiddenAt = Math.min(hiddenAt, perf.now());
    endLcp();
    if (hasCls) put("CLS", cls);
    const d = [...worst.values()].sort((a, b) => b - a);
    const n = Math.max(perf.interactionCount || 0, d.length);
    if (d.length) put("INP", d[Math.min(Math.floor(n / 50), d.length - 1)]);
    ended = true;
    if (!queue.length) return;
    const body = JSON.stringify({ page: location.pathname, metrics: queue.splice(0), nav: navType });
    let ok = false;
    try {
      ok = navigator.sendBeacon(url, body); // a string goes as text/plain: no CORS preflight
    } catch {}
    if (!ok) fetch(url, { method: "POST", body, keepalive: true, mode: "no-cors" }).catch(() => {});
  };
  addEventListener("visibilitychange", () => document.visibilityState === "hidden" && onHidden(), true);
  addEventListener("pagehide", onHidden, true);
})();
