// The board page: polls /api/board and draws the board's own state (link, clock,
// resources with charts, the doctor's checks, disk health, Pods with their containers
// and newest log lines). Every text goes in through punnet.el (never as HTML).
"use strict";
(function () {
  const p = window.punnet;
  const el = p.el;
  // <details> the reader opened stay open across refreshes.
  const open = new Set();

  const pillClass = { ok: "ok", warning: "warn", error: "bad" };
  const phaseClass = {
    Running: "ok", Succeeded: "ok", Pending: "warn", Terminating: "warn", Failed: "bad", Unknown: "bad",
  };

  function details(key, summary, ...body) {
    const d = el("details", { open: open.has(key) }, el("summary", {}, summary), ...body);
    d.addEventListener("toggle", () => (d.open ? open.add(key) : open.delete(key)));
    return d;
  }

  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === "") continue;
      dl.append(el("dt", {}, k), el("dd", {}, v));
    }
    return dl;
  }

  function age(when) {
    return when ? el("span", { "data-time": when, title: when }, p.ago(when)) : "–";
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m` : `${s}s`;
  }

  function bar(part, whole) {
    const b = el("div", { class: "bar" });
    const fill = el("span");
    fill.style.width = whole > 0 ? Math.min(100, (100 * part) / whole).toFixed(1) + "%" : "0";
    b.append(fill);
    return b;
  }

  function metric(label, value, chart, note) {
    return el("div", { class: "metric" },
      el("div", { class: "label" }, el("span", {}, label), el("span", { class: "value" }, value)),
      chart, note ? el("div", { class: "muted small" }, note) : "");
  }

  function header(b) {
    document.title = `${b.node.name} · Punnet board`;
    p.fill("#node", b.node.name);
    p.fill("#model", b.node.boardModel || `${b.node.arch} ${b.node.osImage}`);
    const link = b.link.connected
      ? el("span", { class: "pill ok", title: b.link.broker }, "broker connected")
      : el("span", { class: "pill bad", title: b.link.lastError || b.link.broker }, "broker unreachable");
    const clock = b.clock.synced
      ? el("span", { class: "pill ok", title: b.clock.detail }, "clock synced")
      : el("span", { class: "pill warn", title: b.clock.detail }, "clock not synced");
    const gen = b.desired.generation === null
      ? el("span", { class: "pill warn" }, "no desired state")
      : el("span", { class: "pill", title: `from the ${b.desired.source}` }, `generation ${b.desired.generation}`);
    const plain = b.link.plaintext && el("span", { class: "pill bad" }, "NO TLS");
    p.fill("#badges", link, clock, gen, plain);
  }

  function banners(b) {
    const out = [];
    if (b.link.plaintext) {
      out.push(el("div", { class: "banner bad", id: "plaintext" },
        el("strong", {}, "Plaintext MQTT: "),
        "this agent talks to its broker WITHOUT TLS (",
        el("code", {}, "--allow-plaintext"),
        "). Anyone on the network can read its status and logs, and only the controller's signature protects its desired state. Use ",
        el("code", {}, "mqtts://"), " with ", el("code", {}, "--ca"), "."));
    }
    if (!b.link.connected) {
      out.push(el("div", { class: "banner", id: "offline" },
        el("strong", {}, "The broker is unreachable"),
        b.link.since ? [" since ", age(b.link.since)] : "",
        ` (${b.link.broker}). The Pods keep running on the last desired state; this page shows the board's own view.`,
        b.link.lastError ? [el("br"), el("span", { class: "small" }, b.link.lastError)] : ""));
    }
    p.fill("#banners", out);
  }

  function resources(b) {
    const r = b.resources, h = b.history;
    const cpuPct = r.cpus ? (r.cpuMillis / (10 * r.cpus)).toFixed(0) + "%" : "–";
    const temps = h.temperatureMillicelsius.map((t) => (t === null ? null : t / 1000));
    const span = h.at.length > 1 ? duration(h.at[h.at.length - 1] - h.at[0]) : "";
    const chart = (values, o) => p.sparkline(values, Object.assign({ width: 300, height: 44 }, o));
    const noTemp = r.temperatureMillicelsius === null;
    p.fill("#resources",
      el("h3", {}, "Resources", span ? el("span", { class: "pill" }, `last ${span}`) : ""),
      el("div", { class: "sub" }, "one sample per heartbeat, the last hour kept in memory"),
      el("div", { class: "metrics one" },
        metric("CPU", `${cpuPct} of ${r.cpus} CPU${r.cpus > 1 ? "s" : ""}`, chart(h.cpuMillis, { min: 0, max: 1000 * (r.cpus || 1), label: "CPU use, last hour" })),
        metric("Memory", `${p.bytes(r.memoryUsedBytes)} of ${p.bytes(r.memoryBytes)}`,
          chart(h.memoryUsedBytes, { min: 0, max: r.memoryBytes || undefined, label: "memory in use, last hour" })),
        metric("Temperature", noTemp ? "not reported" : (r.temperatureMillicelsius / 1000).toFixed(1) + " °C",
          noTemp ? "" : chart(temps, { label: "SoC temperature, last hour" }), noTemp ? "this board has no thermal sensor" : ""),
        metric("Disk", r.diskTotalBytes ? `${p.bytes(r.diskFreeBytes)} free of ${p.bytes(r.diskTotalBytes)}` : "–",
          bar(r.diskTotalBytes - r.diskFreeBytes, r.diskTotalBytes))));
  }

  // Problems first, each with its fix; what is fine in one line of chips.
  function doctor(b) {
    const bad = b.checks.filter((c) => c.level !== "ok");
    const good = b.checks.filter((c) => c.level === "ok");
    const list = el("ul", { class: "checks" });
    for (const c of bad) {
      list.append(el("li", { class: c.level },
        el("span", { class: "pill " + pillClass[c.level] }, c.level),
        el("div", {},
          el("strong", {}, c.name), " ", el("span", {}, c.detail),
          el("div", { class: "fix" }, el("strong", {}, "Fix: "), c.fix))));
    }
    p.fill("#doctor",
      el("h3", {}, "Doctor", bad.length ? el("span", { class: "pill " + (bad.some((c) => c.level === "error") ? "bad" : "warn") }, `${bad.length} to look at`) : el("span", { class: "pill ok" }, "all good")),
      bad.length ? list : "",
      good.length ? el("div", { class: "fine" }, el("span", { class: "muted small" }, "fine: "),
        good.map((c) => el("span", { class: "chip ok", title: c.detail }, "✓ " + c.name, el("span", { class: "muted" }, " · " + c.detail)))) : "");
  }

  function linkCard(b) {
    const l = b.link, d = b.desired, s = b.signatures;
    const reasons = Object.entries(s.rejected).map(([k, v]) => `${k} ×${v}`).join(", ");
    p.fill("#link",
      el("h3", {}, "Controller link"),
      kv([
        ["Broker", el("code", {}, l.broker)],
        ["State", [l.connected ? el("span", { class: "pill ok" }, "connected") : el("span", { class: "pill bad" }, "unreachable"),
          l.since ? [" since ", age(l.since)] : ""]],
        ["Last error", l.connected ? null : l.lastError],
        ["Transport", l.plaintext ? el("span", { class: "pill bad" }, "plaintext (no TLS)") : "TLS"],
        ["Desired state", d.generation === null ? "none yet" : `generation ${d.generation} (epoch ${d.epoch})`],
        ["Received", d.receivedAt ? age(d.receivedAt) : d.generation === null ? "–" : "restored from the local store at start"],
        ["Signatures", s.hasControllerKey ? (s.rejectedTotal ? el("span", { class: "pill bad" }, `${s.rejectedTotal} refused`) : el("span", { class: "pill ok" }, "none refused")) : el("span", { class: "pill bad" }, "no controller key")],
        ["Refused by reason", reasons || null],
        ["Last refusal", s.lastRejection],
      ]));
  }

  function systemCard(b) {
    const n = b.node, c = b.clock, s = b.storage;
    const labels = Object.entries(n.labels || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
    const wear = s.lifeTime ? `type A ${s.lifeTime[0]}, type B ${s.lifeTime[1]} used` : null;
    p.fill("#system",
      el("h3", {}, "Board"),
      kv([
        ["Model", n.boardModel || null],
        ["Platform", `${n.platform || n.arch}`],
        ["OS", n.osImage],
        ["Kernel", n.kernelVersion],
        ["Agent", n.agentVersion],
        ["Addresses", n.addresses.join(", ")],
        ["Up", duration(n.uptimeSeconds)],
        ["Clock", c.synced
          ? [el("span", { class: "pill ok" }, "synced"), c.maxErrorMs !== null ? el("span", { class: "small muted" }, ` ±${c.maxErrorMs.toFixed(1)} ms`) : ""]
          : el("span", { class: "pill warn", title: c.detail }, "not synced")],
        ["Storage", s.device ? `${s.kind || "disk"} ${s.device}${s.model ? " (" + s.model + ")" : ""}` : "–"],
        ["Wear", wear],
        ["Reserved blocks", s.preEol],
        ["Written since boot", s.writtenSinceBootBytes === null ? null : p.bytes(s.writtenSinceBootBytes)],
        ["Disk note", s.note],
        ["Labels", labels.length ? el("span", { class: "chips" }, labels) : null],
      ]));
  }

  function stateCell(c) {
    let cls = "warn", text = c.state;
    if (c.state === "running") { cls = c.ready ? "ok" : "warn"; text = c.ready ? "running" : "running, not ready"; }
    else if (c.state === "terminated") {
      cls = c.exitCode === 0 ? "ok" : "bad";
      text = `exited ${c.exitCode}` + (c.signal ? ` (signal ${c.signal})` : "");
    } else if (c.reason) { cls = /Err|BackOff|Error/.test(c.reason) ? "bad" : "warn"; }
    return el("td", {},
      el("span", { class: "pill " + cls }, text),
      c.reason && c.state !== "running" ? [" ", el("span", { class: "small" }, c.reason)] : "",
      c.message ? el("div", { class: "small muted" }, c.message) : "",
      c.lastExitCode !== null && c.lastExitCode !== undefined
        ? el("div", { class: "small muted" }, `previous run: exit ${c.lastExitCode}${c.lastReason ? " " + c.lastReason : ""}`, c.lastFinishedAt ? [" ", age(c.lastFinishedAt)] : "")
        : "");
  }

  function containerRows(pod, list, init) {
    return list.map((c) => el("tr", {},
      el("td", {}, el("strong", {}, c.name), init ? el("span", { class: "muted small" }, " init") : ""),
      stateCell(c),
      el("td", { class: "num" }, c.restarts),
      el("td", { class: "num" }, c.cpuMillis === null ? "–" : `${c.cpuMillis}m`),
      el("td", { class: "num" }, c.memoryBytes === null ? "–" : p.bytes(c.memoryBytes), c.memoryLimitBytes ? el("span", { class: "muted" }, " / " + p.bytes(c.memoryLimitBytes)) : ""),
      el("td", { class: "hide-phone small mono" }, c.image)));
  }

  function logBlock(pod, c) {
    const env = c.env.map((e) => el("div", { class: "mono small" }, e.name, "=",
      e.from ? el("span", { class: "muted" }, `(${e.from})`) : e.value));
    return el("div", { class: "container" },
      el("div", { class: "small muted" }, `${c.name}: newest log lines`),
      c.log.length ? el("pre", { class: "log", "data-container": c.name }, c.log.join("\n")) : el("div", { class: "muted small" }, "no output yet"),
      env.length ? details(`env:${pod.uid}:${c.name}`, `environment (${env.length})`, env) : "");
  }

  function podCard(pod) {
    const all = pod.initContainers.concat(pod.containers);
    return el("div", { class: "card pod", id: `pod-${pod.namespace}-${pod.name}` },
      el("h3", {},
        el("span", { class: "pod-name" }, pod.name),
        el("span", { class: "muted small" }, pod.namespace),
        el("span", { class: "pill " + (phaseClass[pod.phase] || "") }, pod.phase),
        pod.restarts ? el("span", { class: "pill warn" }, `${pod.restarts} restart${pod.restarts > 1 ? "s" : ""}`) : ""),
      el("div", { class: "sub" },
        `${pod.readyContainers}/${pod.containers.length} ready`,
        pod.podIp ? ` · ${pod.hostNetwork ? "host network" : "IP"} ${pod.podIp}` : "",
        pod.startTime ? [" · started ", age(pod.startTime)] : "",
        pod.reason ? ` · ${pod.reason}` : "",
        pod.message ? el("div", {}, pod.message) : ""),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Container"), el("th", {}, "State"), el("th", { class: "num" }, "Restarts"),
          el("th", { class: "num" }, "CPU"), el("th", { class: "num" }, "Memory"), el("th", { class: "hide-phone" }, "Image"))),
        el("tbody", {}, containerRows(pod, pod.initContainers, true), containerRows(pod, pod.containers, false)))),
      all.map((c) => logBlock(pod, c)));
  }

  function pods(b) {
    p.fill("#pod-count", `(${b.pods.length})`);
    if (!b.pods.length) {
      p.fill("#pods", el("p", { class: "muted" }, b.desired.generation === null
        ? "No desired state yet: the controller has not sent this node any Pods."
        : "No Pods are scheduled on this board."));
      return;
    }
    // Keep each log scrolled to its end unless the reader scrolled up.
    const stick = new Map();
    document.querySelectorAll("#pods pre.log").forEach((pre) => {
      const k = pre.closest(".pod").id + "/" + pre.getAttribute("data-container");
      stick.set(k, pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8 ? null : pre.scrollTop);
    });
    p.fill("#pods", b.pods.map(podCard));
    document.querySelectorAll("#pods pre.log").forEach((pre) => {
      const k = pre.closest(".pod").id + "/" + pre.getAttribute("data-container");
      const top = stick.get(k);
      pre.scrollTop = top === undefined || top === null ? pre.scrollHeight : top;
    });
  }

  function render(b) {
    header(b);
    banners(b);
    resources(b);
    doctor(b);
    linkCard(b);
    systemCard(b);
    pods(b);
  }

  function setLive(state, err) {
    const live = p.$("#live");
    if (state === "live") {
      live.className = "live on";
      live.textContent = "live";
    } else {
      live.className = "live off";
      live.textContent = err && err.status === 401 ? "signed out" : "agent not answering, retrying…";
    }
  }

  // The cookie expired or the token changed: the page itself shows the sign-in form.
  p.onUnauthorized = () => window.location.reload();
  p.live("/api/board", render, { interval: 2000, onState: setLive });
  setInterval(p.tickAges, 5000);
})();
