// The controller's fleet page: the overview (/ui/), a Pod's page (/ui/pods/NS/NAME)
// and the login form (/ui/login). Reads /ui/api/fleet and /ui/api/pods/NS/NAME every
// few seconds and a Pod's log from the REST API, following it. Read-only: nothing
// here sends anything but GETs, the login and the logout.
"use strict";
(function () {
  const P = window.punnet;
  const { el, fill, ago } = P;
  const POLL_MS = 2000;

  const pill = (text, kind) => el("span", { class: "pill " + (kind || "") }, text);
  const phaseKind = (p) =>
    ({ Running: "ok", Succeeded: "ok", Pending: "warn", Failed: "bad", Unknown: "bad" })[p] || "";
  const stateKind = (s) =>
    ({ Available: "ok", Complete: "ok", Running: "ok", Progressing: "warn", Waiting: "warn", Failed: "bad", Terminated: "" })[s] || "";
  const age = (t) => el("span", { "data-time": t || "", title: t || "" }, ago(t));
  const podHref = (ns, name) => `/ui/pods/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
  // A table; on a phone each row becomes a card whose cells carry their column's name.
  const table = (head, rows, empty) => {
    rows.forEach((r) => [...r.children].forEach((td, i) => {
      if (head[i] && !td.hasAttribute("data-label")) td.setAttribute("data-label", head[i].t || head[i]);
      // One box per cell, so that the phone layout keeps a cell's parts together.
      if (td.childNodes.length > 1) td.replaceChildren(el("span", {}, [...td.childNodes]));
    }));
    return el("div", { class: "table-wrap" },
      el("table", { class: "stack" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.cls || "" }, h.t || h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: head.length, class: "muted" }, empty)))));
  };

  function liveState(state, err) {
    const e = P.$("#live");
    if (!e) return;
    e.className = "live " + (state === "live" ? "on" : "off");
    e.textContent = state === "live" ? "live" : state === "error" ? "error: " + (err && err.message) : "reconnecting…";
  }

  P.onUnauthorized = () => {
    if (location.pathname !== "/ui/login") location.href = "/ui/login";
  };

  function banners(plaintext) {
    fill("#banners", plaintext && el("div", { class: "banner bad", id: "plaintext-warning" },
      el("strong", {}, "Plaintext: "),
      "this controller serves its API and MQTT without TLS (",
      el("code", {}, "--allow-plaintext"),
      "), so tokens and Pod specs cross the network readable by anyone on it. Restart it without ",
      el("code", {}, "--allow-plaintext"), " to use TLS."));
  }

  // ---------------------------------------------------------------- overview
  const filters = { node: "", pod: "", events: "" };

  function overviewSkeleton() {
    const input = (key, placeholder) => {
      const i = el("input", { type: "search", placeholder, "aria-label": placeholder, id: "filter-" + key });
      i.addEventListener("input", () => { filters[key] = i.value; refresh(); });
      return i;
    };
    fill("#view",
      el("p", { id: "summary", class: "muted" }),
      el("h2", { id: "nodes" }, "Nodes ", el("span", { class: "count", id: "nodes-count" })),
      el("div", { class: "toolbar" }, input("node", "Filter nodes by name")),
      el("div", { class: "grid", id: "node-cards" }),
      el("h2", { id: "workloads" }, "Workloads ", el("span", { class: "count", id: "workloads-count" })),
      el("div", { id: "workload-table" }),
      el("h2", { id: "pods" }, "Pods ", el("span", { class: "count", id: "pods-count" })),
      el("div", { class: "toolbar" }, input("pod", "Filter Pods by name or node")),
      el("div", { id: "pod-table" }),
      el("h2", { id: "events" }, "Events ", el("span", { class: "count", id: "events-count" })),
      el("div", { class: "toolbar" }, input("events", "Filter by object, e.g. Pod/default/web")),
      el("div", { id: "event-table" }));
  }

  function metric(label, value, values, opts) {
    return el("div", { class: "metric" },
      el("div", { class: "label" }, el("span", {}, label), el("span", { class: "value" }, value)),
      P.sparkline(values, Object.assign({ label: label + " over the last hour" }, opts)));
  }

  function nodeCard(n) {
    const u = n.usage;
    const h = n.history || {};
    const temp = u && u.temperatureCelsius !== null && u.temperatureCelsius !== undefined
      ? u.temperatureCelsius.toFixed(1) + " °C" : "–";
    const rejected = Object.values(n.rejected || {}).reduce((a, b) => a + b, 0);
    return el("div", { class: "card node", "data-node": n.name },
      el("h3", {}, n.name,
        n.ready ? pill("Ready", "ok") : pill("Offline", "bad"),
        n.unschedulable && pill("Cordoned", "warn")),
      el("div", { class: "sub" },
        "last contact ", age(n.lastContact), " · ",
        [n.board, n.platform || n.arch].filter(Boolean).join(" · "),
        n.cpus ? ` · ${n.cpus} CPUs` : "", n.memoryBytes ? ` · ${P.bytes(n.memoryBytes)}` : ""),
      u ? el("div", { class: "metrics" },
        metric("CPU", (u.cpuMillis / 10 / Math.max(n.cpus, 1)).toFixed(0) + "%", h.cpuMillis,
          { min: 0, max: Math.max(n.cpus, 1) * 1000 }),
        metric("Memory", `${P.bytes(u.memoryUsedBytes)} (${P.pct(u.memoryUsedBytes, n.memoryBytes)})`,
          h.memoryUsedBytes, { min: 0, max: n.memoryBytes || undefined }),
        metric("Disk", `${P.bytes(u.diskUsedBytes)} of ${P.bytes(u.diskTotalBytes)}`, h.diskUsedBytes,
          { min: 0, max: u.diskTotalBytes || undefined }),
        metric("Temperature", temp, h.temperatureCelsius, { min: 30, max: 90 }))
        : el("p", { class: "muted small" }, "no figures reported yet"),
      n.warnings.length ? el("ul", { class: "warnings" },
        n.warnings.map((w) => el("li", { class: w.level }, w.text))) : null,
      el("p", { class: "small " + (rejected ? "" : "muted") },
        rejected
          ? el("span", { class: "pill bad" }, `${rejected} status reports refused`)
          : "signed status: 0 refused",
        rejected ? " " + Object.entries(n.rejected).filter(([, v]) => v).map(([k, v]) => `${k.replace("_", " ")}: ${v}`).join(", ") : ""),
      el("div", { class: "chips" },
        n.pods.length ? n.pods.map((key) => {
          const [ns, name] = key.split("/");
          return el("a", { class: "chip", href: podHref(ns, name) }, name);
        }) : el("span", { class: "muted small" }, "no Pods")));
  }

  function renderFleet(f) {
    banners(f.plaintext);
    const c = f.counts;
    fill("#summary", `${c.nodesReady} of ${c.nodes} nodes ready · ${c.podsRunning} of ${c.pods} Pods running`,
      c.podsPending ? ` · ${c.podsPending} pending` : "", c.podsFailed ? ` · ${c.podsFailed} failed` : "",
      ` · controller ${f.version}`);
    fill("#nodes-count", c.nodesMatching > f.nodes.length ? `(${f.nodes.length} of ${c.nodesMatching})` : `(${c.nodesMatching})`);
    fill("#node-cards", f.nodes.length ? f.nodes.map(nodeCard) : el("p", { class: "muted" }, "No nodes yet: start punnet-agent on a board."));

    fill("#workloads-count", `(${f.workloads.length})`);
    fill("#workload-table", table(
      ["Kind", "Name", { t: "Ready", cls: "num" }, { t: "Updated", cls: "num" }, "State", { t: "Age", cls: "hide-phone" }],
      f.workloads.map((w) => el("tr", { "data-workload": `${w.kind}/${w.namespace}/${w.name}` },
        el("td", {}, w.kind),
        el("td", {}, el("span", { class: "muted" }, w.namespace + "/"), w.name),
        el("td", { class: "num" }, `${w.ready}/${w.desired}`),
        el("td", { class: "num" }, w.updated),
        el("td", {}, pill(w.state, stateKind(w.state)), w.message ? el("div", { class: "small muted" }, w.message) : null),
        el("td", { class: "hide-phone" }, age(w.created)))),
      "No Deployments, DaemonSets or Jobs."));

    fill("#pods-count", c.podsMatching > f.pods.length ? `(${f.pods.length} of ${c.podsMatching})` : `(${c.podsMatching})`);
    fill("#pod-table", table(
      ["Pod", "Phase", "Node", { t: "Ready", cls: "num" }, { t: "Restarts", cls: "num" }, "Age", { t: "Image", cls: "hide-phone" }],
      f.pods.map((p) => el("tr", { "data-pod": `${p.namespace}/${p.name}` },
        el("td", {}, el("a", { href: podHref(p.namespace, p.name) }, p.name),
          el("div", { class: "small muted" }, p.namespace)),
        el("td", {}, pill(p.deleting ? "Terminating" : p.phase, p.deleting ? "warn" : phaseKind(p.phase)),
          p.waiting ? el("div", { class: "small muted" }, p.waiting) : null),
        el("td", {}, p.node || el("span", { class: "muted" }, "unscheduled")),
        el("td", { class: "num" }, p.ready),
        el("td", { class: "num" }, p.restarts),
        el("td", {}, age(p.created)),
        el("td", { class: "hide-phone mono small" }, p.images.join(", ")))),
      "No Pods."));

    fill("#events-count", `(${f.events.length})`);
    fill("#event-table", eventTable(f.events));
  }

  function eventTable(events) {
    return table(
      ["Last seen", "Type", "Object", "Reason", "Message", { t: "Count", cls: "num hide-phone" }],
      events.map((e) => el("tr", {},
        el("td", {}, age(e.last)),
        el("td", {}, pill(e.type || "Normal", e.type === "Warning" ? "warn" : "")),
        el("td", { class: "small" }, e.object),
        el("td", {}, e.reason),
        el("td", { class: "small wide" }, e.message),
        el("td", { class: "num hide-phone" }, e.count))),
      "No events.");
  }

  let refresh = () => {};
  function overview() {
    overviewSkeleton();
    const url = () => "/ui/api/fleet?" + new URLSearchParams(
      Object.entries(filters).filter(([, v]) => v.trim())).toString();
    let timer = null;
    const tick = async () => {
      clearTimeout(timer);
      try { renderFleet(await P.api(url())); liveState("live"); }
      catch (e) { liveState(e.status === 401 ? "error" : "retrying", e); }
      timer = setTimeout(tick, document.hidden ? POLL_MS * 4 : POLL_MS);
    };
    refresh = tick;
    tick();
  }

  // ---------------------------------------------------------------- Pod page
  function podPage(ns, name) {
    fill("#view",
      el("p", {}, el("a", { href: "/ui/#pods" }, "← all Pods")),
      el("h2", {}, "Pod ", el("span", { class: "muted" }, ns + "/"), name, " ", el("span", { id: "pod-phase" })),
      el("div", { class: "card", id: "pod-facts" }),
      el("h2", {}, "Containers"),
      el("div", { id: "containers" }),
      el("h2", {}, "Log ", el("span", { class: "count", id: "log-state" })),
      el("div", { class: "toolbar" }, el("select", { id: "log-container", "aria-label": "container" })),
      el("pre", { class: "log", id: "log" }),
      el("h2", {}, "Events"),
      el("div", { id: "pod-events" }));
    // The stream being followed, its container, and the run (restarts, state) it
    // showed: a stream that ended is opened again only when a new run begins.
    let following = null, followed = "", lastRun = "";

    const follow = (container) => {
      if (following) following.stop();
      followed = container;
      const pre = P.$("#log");
      pre.textContent = "";
      fill("#log-state", "(following)");
      const q = new URLSearchParams({ follow: "true", tailLines: "200", container });
      following = P.follow(`/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}/log?${q}`,
        (line) => {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(line + "\n");
          // Keep the page light: the last 2,000 lines.
          while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        },
        (err) => {
          fill("#log-state", err ? `(${err.message})` : "(ended)");
          following = null;
        });
    };
    P.$("#log-container").addEventListener("change", (e) => follow(e.target.value));

    const render = (p) => {
      fill("#pod-phase", pill(p.deleting ? "Terminating" : p.phase, phaseKind(p.phase)));
      const kv = [["Node", p.node || "unscheduled"], ["Pod IP", p.podIp], ["Ready", p.ready],
        ["Restarts", p.restarts], ["Created", age(p.created)], ["Owner", p.owner],
        ["Reason", p.reason], ["Message", p.message], ["Waiting", p.waiting]].filter(([, v]) => v !== null && v !== undefined && v !== "");
      fill("#pod-facts", el("dl", { class: "kv" }, kv.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
      fill("#containers", table(
        ["Container", "State", { t: "Exit code", cls: "num" }, { t: "Restarts", cls: "num" }, "Last run", { t: "Image", cls: "hide-phone" }],
        p.containers.map((c) => el("tr", { "data-container": c.name },
          el("td", {}, c.name, c.init ? el("span", { class: "small muted" }, " (init)") : null),
          el("td", {}, pill(c.state, stateKind(c.state)), c.ready ? " ready" : "",
            c.reason || c.message ? el("div", { class: "small muted" }, [c.reason, c.message].filter(Boolean).join(": ")) : null,
            c.started ? el("div", { class: "small muted" }, "started ", age(c.started)) : null),
          el("td", { class: "num" }, c.exitCode === null || c.exitCode === undefined ? "–" : c.exitCode),
          el("td", { class: "num" }, c.restarts),
          el("td", { class: "small" }, c.lastExitCode === null || c.lastExitCode === undefined ? "–"
            : `exit ${c.lastExitCode}${c.lastReason ? " (" + c.lastReason + ")" : ""}`),
          el("td", { class: "hide-phone mono small" }, c.image))),
        "No containers."));
      fill("#pod-events", eventTable(p.events));
      const select = P.$("#log-container");
      const names = p.containers.map((c) => c.name);
      if (select.options.length !== names.length) {
        fill(select, names.map((n) => el("option", { value: n }, n)));
        const main = p.containers.find((c) => !c.init);
        if (main) select.value = main.name;
      }
      // Start following once the container has run (its log exists), and again after
      // a restart ended the previous stream.
      const chosen = p.containers.find((c) => c.name === select.value);
      if (chosen && p.node && (chosen.state !== "Waiting" || chosen.restarts > 0)) {
        const run = `${chosen.name}:${chosen.restarts}:${chosen.state}`;
        if ((!following && run !== lastRun) || followed !== chosen.name) { lastRun = run; follow(chosen.name); }
      }
    };
    const tick = async () => {
      try { const p = await P.api(`/ui/api/pods/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`); render(p); liveState("live"); }
      catch (e) {
        liveState(e.status === 401 ? "error" : "retrying", e);
        if (e.status === 404) fill("#pod-facts", el("p", { class: "muted" }, `Pod ${ns}/${name} does not exist (any more).`));
      }
      setTimeout(tick, document.hidden ? POLL_MS * 4 : POLL_MS);
    };
    tick();
    // The plaintext warning on every page.
    fetch("/status").then((r) => r.json()).then((s) => banners(s.plaintext)).catch(() => {});
  }

  // ---------------------------------------------------------------- login
  function loginPage() {
    const form = P.$("#login");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = P.$("#error");
      error.hidden = true;
      try {
        await P.api("/ui/login", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ token: P.$("#token").value }) });
        location.href = "/ui/";
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
      }
    });
  }

  function start() {
    const path = location.pathname;
    if (path === "/ui/login") return loginPage();
    P.$("#logout").addEventListener("click", async () => {
      await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
      location.href = "/ui/login";
    });
    const m = path.match(/^\/ui\/pods\/([^/]+)\/([^/]+)$/);
    if (m) podPage(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    else overview();
    setInterval(P.tickAges, 1000);
  }
  start();
})();
