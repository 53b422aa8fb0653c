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
        el("td", {}, m.name, m.self ? el("span", { class: "you", text: "this node" }) : null,
          ...(vipsByOwner().get(m.name) || []).map((v) => el("span", { class: "vip-chip", text: "VIP " + v.ip, title: "announces " + v.ip + " for " + v.service }))),
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
    // Centre the drawing vertically (an odd number of nodes is not
    // symmetric): from the top of the self ring to the label below.
    const ys = Object.values(pos).map((p) => p.y);
    if (ys.length > 0) {
      const shift = H / 2 - (Math.min(...ys) - 34 + Math.max(...ys) + 52) / 2;
      for (const p of Object.values(pos)) p.y += shift;
    }
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
    drawVIPBadges(root, list, pos, cx, W, H);
  }

  // vipsByOwner groups the cluster's announced VIPs by announcing node.
  function vipsByOwner() {
    const m = new Map();
    for (const v of (snap.status && snap.status.vips) || []) {
      if (!v.owner) continue;
      if (!m.has(v.owner)) m.set(v.owner, []);
      m.get(v.owner).push(v);
    }
    return m;
  }

  // drawVIPBadges puts, beside every node that announces VIPs, a badge
  // listing them (address and service), on the side away from the centre
  // when it fits there.
  function drawVIPBadges(root, list, pos, cx, W, H) {
    const byOwner = vipsByOwner();
    const layer = svg("g", { class: "vips" });
    root.append(layer);
    const LINE = 16, PAD = 7, GAP = 38;
    for (const m of list) {
      const vips = byOwner.get(m.name);
      const p = pos[m.name];
      if (!vips || !p) continue;
      const short = (k) => { const n = k.slice(k.indexOf("/") + 1); return n.length > 12 ? n.slice(0, 11) + "…" : n; };
      const text = svg("text", { class: "vip-text" },
        svg("tspan", { class: "vip-head", x: 0, dy: 0, text: "VIP" + (vips.length > 1 ? "s" : "") }),
        ...vips.flatMap((v) => [
          svg("tspan", { class: "vip-ip", x: 0, dy: LINE, text: v.ip }),
          svg("tspan", { class: "vip-svc", dx: 6, text: short(v.service) }),
        ]));
      const rect = svg("rect", { class: "vip-bg", rx: 6, ry: 6 });
      const g = svg("g", { class: "vip-badge", "data-node": m.name, "data-vips": vips.map((v) => v.ip).join(" ") },
        svg("title", { text: m.name + " announces " + vips.map((v) => v.ip + " (" + v.service + ")").join(", ") }),
        rect, text);
      layer.append(g);
      // Measure, then place: right of the node on the right half, left on
      // the left half; the other side, or below, when it does not fit.
      let w = 0;
      try {
        const bb = text.getBBox();
        w = bb.width;
      } catch (err) { /* not rendered */ }
      if (!w) w = 7 * Math.max(...vips.map((v) => v.ip.length + 1 + short(v.service).length));
      const bw = w + 2 * PAD, bh = LINE * vips.length + 12 + 2 * PAD;
      const right = { x: p.x + GAP, y: p.y - bh / 2 }, left = { x: p.x - GAP - bw, y: p.y - bh / 2 };
      const fits = (o) => o.x >= 2 && o.x + bw <= W - 2 && o.y >= 2 && o.y + bh <= H - 2;
      let at = p.x >= cx - 1 ? [right, left] : [left, right];
      at = at.find(fits) || { x: Math.min(Math.max(p.x - bw / 2, 2), W - bw - 2), y: Math.min(p.y + 56, H - bh - 2) };
      rect.setAttribute("x", at.x.toFixed(1));
      rect.setAttribute("y", at.y.toFixed(1));
      rect.setAttribute("width", bw.toFixed(1));
      rect.setAttribute("height", bh.toFixed(1));
      text.setAttribute("transform", "translate(" + (at.x + PAD).toFixed(1) + " " + (at.y + PAD + 9).toFixed(1) + ")");
      // A short line from the circle to the badge.
      const ex = at.x + bw / 2 < p.x ? at.x + bw : at.x;
      const ey = Math.min(Math.max(p.y, at.y + 4), at.y + bh - 4);
      const dx = ex - p.x, dy = ey - p.y, d = Math.hypot(dx, dy) || 1;
      layer.insertBefore(svg("line", { class: "vip-link", x1: (p.x + dx / d * 27).toFixed(1), y1: (p.y + dy / d * 27).toFixed(1), x2: ex.toFixed(1), y2: ey.toFixed(1) }), layer.firstChild);
      const ring = root.querySelector('g.node-g[data-node="' + CSS.escape(m.name) + '"] circle.node');
      if (ring) ring.classList.add("announcer");
    }
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

  // ---- services ----

  // podPlaces maps "namespace/name" to the pod's {ip, node}.
  function podPlaces() {
    const m = new Map();
    for (const p of objects("Pod") || []) m.set(qualified(p), { ip: p.ip, node: p.node });
    return m;
  }

  // shortName drops the namespace of key when it is ns.
  function shortName(key, ns) {
    const i = key.indexOf("/");
    return i >= 0 && key.slice(0, i) === ns ? key.slice(i + 1) : key;
  }

  const you = () => el("span", { class: "you", text: "this node" });

  function fmtPort(p) {
    let s = p.port + "/" + (p.protocol || "TCP");
    if (p.targetPort !== undefined && p.targetPort !== null && String(p.targetPort) !== String(p.port)) s += " → " + p.targetPort;
    return s;
  }

  function endpointList(s, self) {
    const eps = s.endpoints || [];
    const spec = (s.object && s.object.spec) || {};
    if (eps.length === 0) {
      const sel = spec.selector && Object.keys(spec.selector).length > 0;
      return sel
        ? el("span", { class: "warn-text", text: "no endpoints", title: "No pod with an address matches the selector." })
        : el("span", { class: "muted", text: "none (no selector)" });
    }
    return el("table", { class: "eps" }, el("tbody", {}, ...eps.map((e) => el("tr", {
      "data-pod": e.pod, "data-ready": e.ready ? "true" : "false",
      title: e.pod + " " + (e.ip || "") + " on " + (e.node || "?") + (e.ready ? ", ready" : ", not ready"),
    },
      el("td", {}, el("span", { class: "dot " + (e.ready ? "ready" : "unready"), title: e.ready ? "ready" : "not ready" }), " ", shortName(e.pod, s.namespace)),
      el("td", { class: "mono", text: e.ip || "—" }),
      el("td", { class: "ep-node" + (e.node === self ? " here" : ""), text: e.node || "—" }),
      e.ready ? null : el("td", { class: "warn-text", text: "not ready" }),
    ))));
  }

  function renderServices() {
    const list = objects("Service") || [];
    const self = snap.status.node.name;
    $("services-count").textContent = String(list.length);
    $("services").hidden = list.length === 0;
    $("services-empty").hidden = list.length > 0;
    const body = $("services").tBodies[0];
    clear(body);
    for (const s of list) {
      const o = s.object || {};
      const spec = o.spec || {};
      const type = spec.type || "ClusterIP";
      const ingress = (o.status && o.status.loadBalancer && o.status.loadBalancer.ingress) || [];
      const vip = s.externalIP || (ingress[0] && ingress[0].ip) || "";
      const cip = s.clusterIP || spec.clusterIP || "";
      const ext = el("td", { class: "ext" });
      if (vip) ext.append(el("span", { class: "mono vip", text: vip }));
      if (s.pending) ext.append(el("div", { class: "pending", text: "pending: " + s.pending }));
      else if (!vip && type === "LoadBalancer") ext.append(el("div", { class: "pending", text: "pending" }));
      else if (!vip) ext.append(el("span", { class: "muted", text: "—" }));
      let owner;
      if (s.owner) {
        owner = el("td", { class: "owner" }, el("span", { class: "owner-name", text: s.owner }), s.owner === self ? you() : null);
      } else if (vip) {
        owner = el("td", { class: "owner warn-text", text: "no node", title: "No node can announce this VIP now (e.g. externalTrafficPolicy Local without a ready endpoint)." });
      } else {
        owner = el("td", { class: "owner muted", text: "—" });
      }
      const ports = (spec.ports || []);
      const policy = spec.externalTrafficPolicy && spec.externalTrafficPolicy !== "Cluster" ? spec.externalTrafficPolicy : "";
      body.append(el("tr", {
        class: s.owner && s.owner === self ? "mine" : "",
        "data-service": qualified(s), "data-vip": vip || null, "data-owner": s.owner || null, "data-pending": s.pending || null,
      },
        el("td", { class: "svc" },
          el("div", { class: "svc-name", text: qualified(s) }),
          spec.selector ? el("div", { class: "svc-sel" }, chips(spec.selector)) : null),
        el("td", {}, el("span", { class: "type " + type.toLowerCase(), text: type }),
          policy ? el("div", { class: "muted small", text: "traffic: " + policy }) : null),
        el("td", { class: "mono", text: cip || "—" }),
        ext,
        owner,
        el("td", { class: "mono ports" }, ports.length === 0 ? "—" : null,
          ...ports.map((p) => el("div", { text: fmtPort(p), title: p.name ? "port " + p.name : null }))),
        el("td", { class: "endpoints" }, endpointList(s, self)),
      ));
    }
    const pools = objects("AddressPool") || [];
    const pe = $("pools");
    clear(pe);
    pe.hidden = pools.length === 0;
    if (pools.length > 0) {
      pe.append(pools.length === 1 ? "Address pool: " : "Address pools: ");
      pools.forEach((p, i) => {
        const spec = (p.object && p.object.spec) || {};
        if (i > 0) pe.append("; ");
        pe.append(el("strong", { text: p.name }), " ", el("span", { class: "mono", text: (spec.addresses || []).join(", ") }),
          spec.autoAssign === false ? " (only for services that name it)" : "");
      });
    }
  }

  // ---- network policies ----

  function selectorParts(sel) {
    if (!sel) return [];
    const parts = Object.keys(sel.matchLabels || {}).sort().map((k) => k + "=" + sel.matchLabels[k]);
    for (const e of sel.matchExpressions || []) {
      const vals = (e.values || []).join(", ");
      switch (e.operator) {
        case "In": parts.push(e.key + " in (" + vals + ")"); break;
        case "NotIn": parts.push(e.key + " notin (" + vals + ")"); break;
        case "Exists": parts.push(e.key); break;
        case "DoesNotExist": parts.push("!" + e.key); break;
        default: parts.push(e.key + " " + e.operator + " " + vals);
      }
    }
    return parts;
  }

  function peerText(peer) {
    if (peer.ipBlock) {
      const ex = peer.ipBlock.except || [];
      return peer.ipBlock.cidr + (ex.length ? " except " + ex.join(", ") : "");
    }
    const pods = peer.podSelector ? selectorParts(peer.podSelector) : null;
    const nss = peer.namespaceSelector ? selectorParts(peer.namespaceSelector) : null;
    let t = pods === null ? "" : pods.length ? "pods " + pods.join(", ") : "all pods";
    if (nss !== null) t += (t ? " in " : "") + (nss.length ? "namespaces " + nss.join(", ") : "all namespaces");
    return t || "?";
  }

  function portText(p) {
    let t = (p.protocol || "TCP") + (p.port !== undefined ? " " + p.port : "");
    if (p.endPort) t += "-" + p.endPort;
    return t;
  }

  function ruleLine(rule, dir) {
    const peers = (dir === "ingress" ? rule.from : rule.to) || [];
    const ports = rule.ports || [];
    const who = peers.length ? peers.map(peerText).join(" or ") : "anywhere";
    return (dir === "ingress" ? "in ← " : "out → ") + who + (ports.length ? " · " + ports.map(portText).join(", ") : " · all ports");
  }

  function policyTypes(spec) {
    if (spec.policyTypes && spec.policyTypes.length) return spec.policyTypes;
    return spec.egress ? ["Ingress", "Egress"] : ["Ingress"];
  }

  function counterCell(c, applies, dir, node) {
    const allowed = (c && c.allowedPackets) || 0, dropped = (c && c.droppedPackets) || 0;
    if (!applies && allowed === 0 && dropped === 0) {
      return el("td", { class: "counters muted", "data-dir": dir, text: "—", title: "this policy has no " + dir + " rules" });
    }
    return el("td", {
      class: "counters", "data-dir": dir, "data-allowed": allowed, "data-dropped": dropped,
      title: (node ? "On " + node + ": " : "") + fmtBytes(c ? c.allowedBytes : 0) + " allowed, " + fmtBytes(c ? c.droppedBytes : 0) + " dropped",
    },
      el("div", { class: "cnt allowed" + (allowed > 0 ? " some" : "") }, el("span", { class: "n", text: String(allowed) }), " allowed"),
      el("div", { class: "cnt dropped" + (dropped > 0 ? " some" : "") }, el("span", { class: "n", text: String(dropped) }), " dropped"),
    );
  }

  function renderPolicies() {
    const list = objects("NetworkPolicy") || [];
    const self = snap.status.node.name;
    const places = podPlaces();
    $("policies-count").textContent = String(list.length);
    $("policies").hidden = list.length === 0;
    $("policies-empty").hidden = list.length > 0;
    const rules = snap.status.node.policyRules || 0;
    $("policy-rules").textContent = list.length ? "· " + rules + " nftables " + (rules === 1 ? "rule" : "rules") + " on " + self : "";
    $("th-ingress").textContent = "Ingress on " + self;
    $("th-egress").textContent = "Egress on " + self;
    const body = $("policies").tBodies[0];
    clear(body);
    for (const p of list) {
      const spec = (p.object && p.object.spec) || {};
      const types = policyTypes(spec);
      const sel = selectorParts(spec.podSelector);
      const selects = p.selects || [];
      const podChips = selects.length === 0
        ? el("span", { class: "muted", text: "no pods yet" })
        : el("div", { class: "chips" }, ...selects.map((k) => {
          const pl = places.get(k) || {};
          return el("span", {
            class: "chip pod" + (pl.node === self ? " local" : ""), "data-pod": k, text: shortName(k, p.namespace),
            title: k + (pl.ip ? " " + pl.ip : "") + (pl.node ? " on " + pl.node : "") + (pl.node === self ? " (this node: counted here)" : ""),
          });
        }));
      const lines = [];
      for (const dir of ["ingress", "egress"]) {
        const rs = spec[dir] || [];
        for (const r of rs) lines.push(el("li", { class: dir, text: ruleLine(r, dir) }));
        if (rs.length === 0 && types.includes(dir === "ingress" ? "Ingress" : "Egress")) {
          lines.push(el("li", { class: dir + " deny", text: (dir === "ingress" ? "in ← " : "out → ") + "nothing (deny all)" }));
        }
      }
      const nrules = (spec.ingress || []).length + (spec.egress || []).length;
      const c = p.counters || null;
      body.append(el("tr", { "data-policy": qualified(p) },
        el("td", { class: "pol-name", text: qualified(p) }),
        el("td", {}, ...types.map((t) => el("span", { class: "type " + t.toLowerCase(), text: t }))),
        el("td", { class: "selects" },
          podChips,
          el("div", { class: "muted small", text: "selector: " + (sel.length ? sel.join(", ") : "every pod in " + (p.namespace || "the namespace")) })),
        el("td", { class: "rules", "data-rules": nrules },
          el("div", { class: "small muted", text: nrules + (nrules === 1 ? " rule" : " rules") }),
          el("ul", { class: "rule-list" }, ...lines)),
        counterCell(c && c.ingress, types.includes("Ingress"), "ingress", c && c.node),
        counterCell(c && c.egress, types.includes("Egress"), "egress", c && c.node),
      ));
    }
  }

  const kindClass = {
    join: "good", "subnet-claimed": "good", applied: "good", "pod-attached": "good",
    leave: "info", "pod-detached": "info",
    "subnet-conflict": "warn", suspect: "warn",
    dead: "bad", "subnet-full": "bad", "subnet-refused": "bad", "apply-rejected": "bad",
    "vip-failover": "vip", "vip-conflict": "conflict",
  };
  // Events about VIPs stand out: their rows are tinted and their kind is a badge.
  const kindIcon = { "vip-failover": "⇄ ", "vip-conflict": "⚠ " };

  function fmtTime(iso) {
    const d = new Date(iso);
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    const t = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return t;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + t;
  }

  function eventRow(e, fresh) {
    const cls = kindClass[e.kind] || "info";
    const rowCls = [fresh ? "new" : "", kindIcon[e.kind] ? "ev-" + cls : ""].filter(Boolean).join(" ");
    return el("tr", { class: rowCls, "data-kind": e.kind },
      el("td", { class: "time", text: fmtTime(e.time), title: e.time }),
      el("td", { text: e.node || "" }),
      el("td", {}, el("span", { class: "kind " + cls + (kindIcon[e.kind] ? " badge" : "") },
        kindIcon[e.kind] ? el("span", { "aria-hidden": "true", text: kindIcon[e.kind] }) : null, e.kind)),
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
