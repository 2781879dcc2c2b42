// Punnet's status pages' shared helpers (the controller's fleet page and the agent's
// board page), no framework: safe DOM building, relative ages, number formats,
// inline-SVG sparklines, fetch with a token, live updates (SSE, else polling) and
// following a streamed log.
"use strict";
(function (global) {
  const punnet = {};

  // A bearer token for fetches, when the page has one (scripts, or a board page that
  // keeps it in sessionStorage); pages behind a cookie leave it empty.
  punnet.token = "";
  // Called with the Response when the server answers 401 (e.g. show a login form).
  punnet.onUnauthorized = null;

  punnet.$ = (sel, root) => (root || document).querySelector(sel);

  // el("td", {class: "num", title: "x"}, "text", otherNode, [more, nodes]): text is
  // always set as text, never parsed as HTML, so nothing from the server can inject markup.
  punnet.el = function (tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    const add = (c) => {
      if (c === undefined || c === null || c === false) return;
      if (Array.isArray(c)) c.forEach(add);
      else e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    };
    children.forEach(add);
    return e;
  };

  // Replaces a container's children in one step (no flicker, no stale rows).
  punnet.fill = function (target, ...children) {
    const t = typeof target === "string" ? punnet.$(target) : target;
    if (!t) return;
    const frag = document.createDocumentFragment();
    const add = (c) => {
      if (c === undefined || c === null || c === false) return;
      if (Array.isArray(c)) c.forEach(add);
      else frag.append(c instanceof Node ? c : document.createTextNode(String(c)));
    };
    children.forEach(add);
    t.replaceChildren(frag);
  };

  // "just now", "42s ago", "3m ago", "5h ago", "2d ago"; in the future: "in 3m".
  punnet.ago = function (when, now) {
    if (when === undefined || when === null || when === "") return "never";
    const t = typeof when === "number" ? when : Date.parse(when);
    if (Number.isNaN(t)) return "unknown";
    let s = Math.round(((now === undefined ? Date.now() : now) - t) / 1000);
    const future = s < 0;
    s = Math.abs(s);
    let text;
    if (s < 5) return "just now";
    else if (s < 60) text = s + "s";
    else if (s < 3600) text = Math.floor(s / 60) + "m";
    else if (s < 86400) text = Math.floor(s / 3600) + "h";
    else text = Math.floor(s / 86400) + "d";
    return future ? "in " + text : text + " ago";
  };

  // 1536 → "1.5 KiB".
  punnet.bytes = function (n) {
    if (n === undefined || n === null || Number.isNaN(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  };

  punnet.pct = (part, whole) =>
    whole > 0 && part !== undefined && part !== null ? Math.round((100 * part) / whole) + "%" : "–";

  // An inline SVG line chart of `values` (numbers; null = no sample). opts: min, max
  // (else from the data), width/height of the drawing (scaled by CSS), label for screen readers.
  punnet.sparkline = function (values, opts) {
    const o = Object.assign({ width: 120, height: 30 }, opts || {});
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${o.width} ${o.height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    if (o.label) svg.setAttribute("aria-label", o.label);
    const nums = (values || []).filter((v) => typeof v === "number" && Number.isFinite(v));
    if (nums.length < 2) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", 2); t.setAttribute("y", o.height - 4); t.setAttribute("class", "none");
      t.textContent = nums.length ? "collecting…" : "no data";
      svg.append(t);
      return svg;
    }
    const lo = o.min !== undefined ? o.min : Math.min(...nums);
    let hi = o.max !== undefined ? o.max : Math.max(...nums);
    if (hi <= lo) hi = lo + 1;
    const n = values.length;
    const x = (i) => ((i / (n - 1)) * o.width).toFixed(1);
    const y = (v) => (o.height - 1 - ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * (o.height - 2)).toFixed(1);
    let d = "", first = null, last = null;
    values.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) return;
      d += (first === null ? "M" : "L") + x(i) + " " + y(v) + " ";
      if (first === null) first = i;
      last = i;
    });
    const area = document.createElementNS(ns, "path");
    area.setAttribute("class", "area");
    area.setAttribute("d", `${d}L${x(last)} ${o.height} L${x(first)} ${o.height} Z`);
    const line = document.createElementNS(ns, "path");
    line.setAttribute("class", "line");
    line.setAttribute("d", d);
    svg.append(area, line);
    return svg;
  };

  // fetch() that sends the token (if any) and the session cookie, and turns a non-2xx
  // answer into an Error carrying the server's message.
  // A request that has not answered in API_TIMEOUT_MS is given up (and the poll that made
  // it tries again): on flaky Wi-Fi a connection can stall without ever failing.
  const API_TIMEOUT_MS = 10000;
  punnet.api = async function (url, init) {
    const headers = Object.assign({ Accept: "application/json" }, (init && init.headers) || {});
    if (punnet.token) headers.Authorization = "Bearer " + punnet.token;
    const extra = { headers };
    if (!(init && init.signal) && typeof AbortSignal.timeout === "function") {
      extra.signal = AbortSignal.timeout(API_TIMEOUT_MS);
    }
    const res = await fetch(url, Object.assign({ credentials: "same-origin" }, init || {}, extra));
    if (res.status === 401 && punnet.onUnauthorized) punnet.onUnauthorized(res);
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { const body = await res.json(); if (body && body.message) msg = body.message; } catch (_) { /* not JSON */ }
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return res.json();
  };

  // Keeps `onData` fed with the JSON at `url`: through Server-Sent Events when
  // opts.sse names an event stream URL (each event's data is JSON), else (and whenever
  // the stream fails) by polling every opts.interval ms. opts.onState gets "live",
  // "retrying" or "error". Returns a function that stops it.
  punnet.live = function (url, onData, opts) {
    const o = Object.assign({ interval: 3000, onState: () => {} }, opts || {});
    let stopped = false, timer = null, source = null;
    const poll = async () => {
      if (stopped) return;
      try {
        onData(await punnet.api(url));
        o.onState("live");
      } catch (e) {
        o.onState(e.status === 401 ? "error" : "retrying", e);
      }
      if (!stopped) timer = setTimeout(poll, document.hidden ? o.interval * 4 : o.interval);
    };
    const startSse = () => {
      source = new EventSource(o.sse, { withCredentials: true });
      source.onmessage = (ev) => {
        try { onData(JSON.parse(ev.data)); o.onState("live"); } catch (e) { o.onState("error", e); }
      };
      source.onerror = () => {
        // Fall back to polling; EventSource would retry on its own but hides why.
        source.close();
        source = null;
        o.onState("retrying");
        if (!stopped && timer === null) timer = setTimeout(poll, o.interval);
      };
    };
    if (o.sse && global.EventSource) startSse();
    else poll();
    return () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      if (source) source.close();
    };
  };

  // Streams a text response line by line (a followed log) into onLine(line); returns
  // {stop}. onEnd(error?) runs when the stream ends.
  punnet.follow = function (url, onLine, onEnd) {
    const ctl = new AbortController();
    (async () => {
      const headers = {};
      if (punnet.token) headers.Authorization = "Bearer " + punnet.token;
      try {
        const res = await fetch(url, { credentials: "same-origin", headers, signal: ctl.signal });
        if (!res.ok) throw new Error(res.status + " " + (await res.text()).slice(0, 300));
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            onLine(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        }
        if (buf) onLine(buf);
        if (onEnd) onEnd();
      } catch (e) {
        if (e.name !== "AbortError" && onEnd) onEnd(e);
      }
    })();
    return { stop: () => ctl.abort() };
  };

  // Refreshes every element with a data-time attribute to its relative age.
  punnet.tickAges = function () {
    document.querySelectorAll("[data-time]").forEach((e) => {
      e.textContent = punnet.ago(e.getAttribute("data-time"));
    });
  };

  global.punnet = punnet;
})(window);
