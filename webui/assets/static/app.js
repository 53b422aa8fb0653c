// netloom dashboard. Plain JavaScript, no dependencies, no build step.
// Data comes from /api/stream (server-sent events: a snapshot every few
// seconds and each event as it happens), or from polling /api/snapshot when
// the stream cannot be used. Every value is inserted as text, never as HTML.
"use strict";
(() => {
  const SVGNS = "http://www.w3.org/2000/svg";
  const FRESH = 120; // seconds: green below, amber below STALE, red above
  const STALE = 300;
  const MAX_EVENTS = 300;

  let snap = null; // last snapshot: {time, auth, status, objects}
  let events = []; // oldest first
  let lastUpdate = 0;
  let pollTimer = null;

  const $ = (id) => document.getElementById(id);

  // el builds an element; attrs: class, text, title, data-*, others as attributes.
  function build(ns, tag, attrs, children) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "class") e.setAttribute("class", v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children || []) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }
  const el = (tag, attrs, ...children) => build(null, tag, attrs, children);
  const svg = (tag, attrs, ...children) => build(SVGNS, tag, attrs, children);

  function fmtBytes(n) {
    n = Number(n) || 0;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  function fmtAge(sec) {
    if (sec < 1) return "just now";
    if (sec < 90) return Math.round(sec) + " s ago";
    if (sec < 90 * 60) return Math.round(sec / 60) + " min ago";
    if (sec < 36 * 3600) return Math.round(sec / 3600) + " h ago";
    return Math.round(sec / 86400) + " d ago";
  }

  // handshakeAge is seconds since the member's last handshake, by the
  // server's clock; null when there was none.
  function handshakeAge(m) {
    const hs = m.wireguard && m.wireguard.lastHandshake;
    if (!hs || !snap) return null;
    return Math.max(0, (Date.parse(snap.time) - Date.parse(hs)) / 1000);
  }

  function hsClass(age) {
    if (age === null) return "hs-old";
    if (age < FRESH) return "hs-fresh";
    if (age < STALE) return "hs-stale";
    return "hs-old";
  }

  const up = (m) => m.state === "alive" || m.state === "suspect";
  // A peer is on this node's WireGuard device when the status has its endpoint.
  const isPeer = (m) => !m.self && up(m) && m.wireguard && m.wireguard.endpoint;

  function setMode(mode, text) {
    const live = $("live");
    live.dataset.mode = mode;
    live.textContent = text || { live: "live", polling: "polling every 3 s", offline: "no connection", connecting: "connecting…" }[mode];
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function members() {
    return (snap && snap.status && snap.status.members) || [];
  }

  function objects(kind) {
    return snap && snap.objects ? snap.objects[kind] : undefined;
  }

  function labelsOf(obj) {
    const md = obj && obj.object && obj.object.metadata;
    return (md && md.labels) || {};
  }

  function chips(map, empty) {
    const keys = Object.keys(map || {}).sort();
    if (keys.length === 0) return el("span", { class: "muted", text: empty || "—" });
    return el("div", { class: "chips" }, ...keys.map((k) => el("span", { class: "chip", text: k + "=" + map[k] })));
  }

  function qualified(o) {
    return o.namespace ? o.namespace + "/" + o.name : o.name;
  }

  // ---- sections ----

  function renderHeader() {
    const n = snap.status.node;
    $("self-name").textContent = n.name;
    $("foot-name").textContent = n.name;
    $("self-version").textContent = n.version ? "v" + n.version : "";
    document.title = "netloom · " + n.name;
    const p = $("problem");
    if (n.subnetError) {
      p.textContent = "This node has no pod subnet: " + n.subnetError;
      p.hidden = false;
    } else {
      p.hidden = true;
    }
  }

  function renderNodes() {
    const self = snap.status.node;
    const body = $("nodes").tBodies[0];
    clear(body);
    const list = members();
    $("nodes-count").textContent = String(list.length);
    for (const m of list) {
      const wg = m.wireguard || {};
      let wgText = wg.endpoint || "—";
      let hsCell = el("td", { class: "muted", text: "—" });
      if (m.self) {
        const w = self.wireguard || {};
        wgText = [w.mode, w.interface, w.port ? "port " + w.port : ""].filter(Boolean).join(" · ");
      } else if (isPeer(m)) {
        const age = handshakeAge(m);
        hsCell = el("td", { class: "age " + hsClass(age), text: age === null ? "never" : fmtAge(age), title: wg.lastHandshake || "no handshake yet" });
      }
      const subnet = m.subnet || (m.self && self.subnet) || "";
      body.append(el("tr", { class: m.self ? "self" : "", "data-node": m.name, "data-state": m.state },
        el("td", {}, m.name, m.self ? el("span", { class: "you", text: "this node" }) : null),
        el("td", {}, el("span", { class: "state " + m.state, text: m.state })),
        el("td", { class: "mono", text: m.address || "—" }),
        el("td", { class: "mono", text: subnet || "none" }),
        el("td", { class: "mono", text: wgText, title: wg.publicKey ? "public key " + wg.publicKey : "" }),
        hsCell,
        el("td", { class: "num", text: isPeer(m) ? fmtBytes(wg.rxBytes) : "—" }),
        el("td", { class: "num", text: isPeer(m) ? fmtBytes(wg.txBytes) : "—" }),
      ));
    }
  }

  function renderTopology() {
    const root = $("topology");
    for (const c of Array.from(root.children)) {
      if (c.tagName.toLowerCase() !== "title") root.removeChild(c);
    }
    const list = members();
    const W = 640, H = 420, cx = W / 2, cy = H / 2 - 6;
    const r = list.length <= 1 ? 0 : Math.min(W, H) / 2 - 62;
    const pos = {};
    list.forEach((m, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(list.length, 1);
      pos[m.name] = { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) };
    });
    const selfName = snap.status.node.name;
    const edges = svg("g", { class: "edges" });
    const labels = svg("g", { class: "labels" });
    const meshed = (m) => up(m) && (m.subnet || m.self);
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i], b = list[j];
        let cls, title, label = null, peer = null;
        if (a.self || b.self) {
          peer = a.self ? b : a;
          if (!isPeer(peer)) continue;
          const age = handshakeAge(peer);
          const wg = peer.wireguard;
          cls = hsClass(age);
          title = selfName + " ↔ " + peer.name + ": " + (age === null ? "no handshake yet" : "handshake " + fmtAge(age)) +
            ", received " + fmtBytes(wg.rxBytes) + ", sent " + fmtBytes(wg.txBytes) + ", endpoint " + wg.endpoint;
          label = "↓ " + fmtBytes(wg.rxBytes) + "  ↑ " + fmtBytes(wg.txBytes);
        } else {
          if (!meshed(a) || !meshed(b)) continue;
          cls = "hs-remote";
          title = a.name + " ↔ " + b.name + ": a tunnel between two other nodes; " + selfName + " does not see its state";
        }
        const p = pos[a.name], q = pos[b.name];
        edges.append(svg("g", { class: "tunnel-g", "data-a": a.name, "data-b": b.name },
          svg("title", { text: title }),
          svg("line", { class: "hit", x1: p.x, y1: p.y, x2: q.x, y2: q.y }),
          svg("line", { class: "tunnel " + cls, "data-a": a.name, "data-b": b.name, "data-peer": peer ? peer.name : null, x1: p.x, y1: p.y, x2: q.x, y2: q.y }),
        ));
        if (label) {
          // At the middle of the line, along it, kept upright.
          const from = a.self ? p : q, to = a.self ? q : p;
          const mx = from.x + (to.x - from.x) * 0.5, my = from.y + (to.y - from.y) * 0.5;
          let deg = Math.atan2(to.y - from.y, to.x - from.x) * 180 / Math.PI;
          if (deg > 90) deg -= 180;
          if (deg < -90) deg += 180;
          labels.append(svg("text", {
            class: "label halo", x: mx, y: my, dy: -7, "text-anchor": "middle",
            transform: "rotate(" + deg.toFixed(1) + " " + mx.toFixed(1) + " " + my.toFixed(1) + ")", text: label,
          }));
        }
      }
    }
    const nodes = svg("g", { class: "nodes" });
    for (const m of list) {
      const p = pos[m.name];
      const tip = m.name + " (" + m.state + ")" + (m.address ? ", " + m.address : "") + (m.subnet ? ", pods " + m.subnet : "");
      nodes.append(svg("g", { class: "node-g " + m.state, "data-node": m.name, "data-state": m.state },
        svg("title", { text: tip }),
        m.self ? svg("circle", { class: "self-ring", cx: p.x, cy: p.y, r: 33 }) : null,
        svg("circle", { class: "node " + m.state, cx: p.x, cy: p.y, r: 26 }),
        svg("text", { class: "name", x: p.x, y: p.y + 5, "text-anchor": "middle", text: m.name.length > 9 ? m.name.slice(0, 8) + "…" : m.name }),
        svg("text", { class: "label halo", x: p.x, y: p.y + 46, "text-anchor": "middle", text: m.state === "alive" ? (m.subnet || "no subnet") : m.state }),
      ));
    }
    root.append(edges, labels, nodes);
  }

  function renderPods() {
    const box = $("pods");
    clear(box);
    const pods = objects("Pod") || [];
    $("pods-count").textContent = String(pods.length);
    if (pods.length === 0) {
      box.append(el("p", { class: "muted", text: "No pods yet." }));
      return;
    }
    const selfName = snap.status.node.name;
    const byNode = new Map();
    for (const p of pods) {
      const k = p.node || "";
      if (!byNode.has(k)) byNode.set(k, []);
      byNode.get(k).push(p);
    }
    const order = Array.from(byNode.keys()).sort((a, b) => {
      const ra = a === selfName ? 0 : a === "" ? 2 : 1, rb = b === selfName ? 0 : b === "" ? 2 : 1;
      return ra - rb || a.localeCompare(b);
    });
    for (const node of order) {
      const list = byNode.get(node);
      const rows = list.map((p) => el("tr", { "data-pod": qualified(p) },
        el("td", { text: qualified(p) }),
        el("td", { class: "mono", text: p.ip || "—" }),
        el("td", {}, chips(labelsOf(p))),
      ));
      box.append(el("div", { class: "pod-node", "data-node": node },
        el("h3", {}, node || "not attached", el("span", { class: "muted", text: " · " + list.length + (list.length === 1 ? " pod" : " pods") })),
        el("table", { class: "grid" },
          el("thead", {}, el("tr", {}, el("th", { text: "Pod" }), el("th", { text: "IP" }), el("th", { text: "Labels" }))),
          el("tbody", {}, ...rows)),
      ));
    }
  }

  function renderServices() {
    const list = objects("Service");
    const sec = $("sec-services");
    sec.hidden = list === undefined;
    if (list === undefined) return;
    $("services-count").textContent = String(list.length);
    const body = $("services").tBodies[0];
    clear(body);
    for (const s of list) {
      const o = s.object || {};
      const spec = o.spec || {};
      const ingress = (o.status && o.status.loadBalancer && o.status.loadBalancer.ingress) || [];
      const addr = s.ip || (ingress[0] && ingress[0].ip) || spec.loadBalancerIP || spec.clusterIP || "pending";
      const ports = (spec.ports || []).map((p) => p.port + "/" + (p.protocol || "TCP") + (p.targetPort ? " → " + p.targetPort : "")).join(", ");
      body.append(el("tr", { "data-service": qualified(s) },
        el("td", { text: qualified(s) }),
        el("td", { text: spec.type || "ClusterIP" }),
        el("td", { class: "mono", text: addr }),
        el("td", { text: s.node || "—" }),
        el("td", { class: "mono", text: ports || "—" }),
        el("td", {}, chips(spec.selector, "none")),
      ));
    }
    if (list.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No services." })));
  }

  function renderPolicies() {
    const list = objects("NetworkPolicy");
    const sec = $("sec-policies");
    sec.hidden = list === undefined;
    if (list === undefined) return;
    $("policies-count").textContent = String(list.length);
    const body = $("policies").tBodies[0];
    clear(body);
    for (const p of list) {
      const spec = (p.object && p.object.spec) || {};
      const sel = (spec.podSelector && spec.podSelector.matchLabels) || {};
      const types = spec.policyTypes || ["Ingress"];
      const rules = (spec.ingress || []).length + " ingress, " + (spec.egress || []).length + " egress";
      body.append(el("tr", { "data-policy": qualified(p) },
        el("td", { text: qualified(p) }),
        el("td", {}, chips(sel, "every pod in " + (p.namespace || "the namespace"))),
        el("td", { text: types.join(", ") }),
        el("td", { text: rules }),
      ));
    }
    if (list.length === 0) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "No network policies." })));
  }

  const kindClass = {
    join: "good", "subnet-claimed": "good", applied: "good", "pod-attached": "good",
    leave: "info", "pod-detached": "info",
    "subnet-conflict": "warn", suspect: "warn",
    dead: "bad", "subnet-full": "bad", "apply-rejected": "bad",
  };

  function fmtTime(iso) {
    const d = new Date(iso);
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    const t = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return t;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + t;
  }

  function eventRow(e, fresh) {
    return el("tr", { class: fresh ? "new" : "", "data-kind": e.kind },
      el("td", { class: "time", text: fmtTime(e.time), title: e.time }),
      el("td", { text: e.node || "" }),
      el("td", {}, el("span", { class: "kind " + (kindClass[e.kind] || "info"), text: e.kind })),
      el("td", { text: e.message }),
    );
  }

  function renderEvents() {
    const body = $("events").tBodies[0];
    clear(body);
    for (let i = events.length - 1; i >= 0; i--) body.append(eventRow(events[i], false));
    $("events-count").textContent = String(events.length);
    $("events-empty").hidden = events.length > 0;
  }

  function addEvent(e) {
    events.push(e);
    const body = $("events").tBodies[0];
    body.insertBefore(eventRow(e, true), body.firstChild);
    if (events.length > MAX_EVENTS) {
      events = events.slice(events.length - MAX_EVENTS);
      while (body.rows.length > MAX_EVENTS) body.deleteRow(body.rows.length - 1);
    }
    $("events-count").textContent = String(events.length);
    $("events-empty").hidden = true;
  }

  function onSnapshot(s) {
    if (s.events) {
      events = s.events.slice(-MAX_EVENTS);
      renderEvents();
    }
    snap = s;
    lastUpdate = Date.now();
    renderHeader();
    renderNodes();
    renderTopology();
    renderPods();
    renderServices();
    renderPolicies();
  }

  // ---- data ----

  async function poll() {
    try {
      const r = await fetch("/api/snapshot", { cache: "no-store", credentials: "same-origin" });
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error(r.statusText);
      onSnapshot(await r.json());
      setMode("polling");
    } catch (err) {
      setMode("offline");
    }
  }

  function startPolling() {
    if (pollTimer) return;
    poll();
    pollTimer = setInterval(poll, 3000);
  }

  function connect() {
    const forcePoll = new URLSearchParams(location.search).has("poll");
    if (forcePoll || !window.EventSource) { startPolling(); return; }
    const es = new EventSource("/api/stream");
    let got = false, failures = 0;
    es.addEventListener("snapshot", (e) => {
      got = true; failures = 0;
      setMode("live");
      onSnapshot(JSON.parse(e.data));
    });
    es.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED || (!got && ++failures >= 3)) {
        // Refused (e.g. the login expired) or never worked: poll instead.
        es.close();
        startPolling();
        return;
      }
      setMode("offline", "reconnecting…");
    });
  }

  // A page that stops hearing from the agent says so.
  setInterval(() => {
    if (lastUpdate && Date.now() - lastUpdate > 10000) {
      setMode("offline", "no update for " + Math.round((Date.now() - lastUpdate) / 1000) + " s");
    }
  }, 1000);

  connect();
})();
