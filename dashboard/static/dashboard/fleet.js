/* The fleet page: every node as a card, a tile per GPU with five values and their sparklines.
 *
 * The server paints the page; this script adopts the cards it finds, then applies the socket's
 * snapshot and updates. Updates are merged as they arrive and drawn once per animation frame,
 * touching only the tiles that changed (text only where it differs, one SVG per tile) and,
 * of those, only the ones on screen: a card scrolled out of view is brought up to date when it
 * comes back (IntersectionObserver; CSS content-visibility skips its layout meanwhile).
 *
 * Query parameters for the render benchmark (benchmarks/dashboard_render.py):
 *   perf=1           record each frame's cost in window.dashPerf
 *   renderer=naive   the baseline: rebuild every card and redraw every sparkline on each update
 *   eager=1          draw every changed tile in the frame, off-screen ones too (what culling and
 *                    the frame budget save)
 */
(function () {
  "use strict";

  const Dash = window.Dash;
  const params = new URLSearchParams(location.search);
  const PERF = params.has("perf");
  const NAIVE = params.get("renderer") === "naive";
  const EAGER = params.has("eager") || NAIVE;

  const grid = document.getElementById("fleet");
  const nodeTemplate = document.getElementById("tpl-node");
  const gpuTemplate = document.getElementById("tpl-gpu");
  const nodeUrl = grid.dataset.nodeUrl;
  const FIELDS = ["util", "mem", "temp", "power", "sm"];

  /* Sparklines: 5 minutes in 5 s buckets, one SVG per tile, a polyline per metric in its own band.
   * (A canvas per tile made Chromium composite each as a layer: layerizing ~80 visible canvases
   * cost more than everything else in a frame. SVG paints into the page's layer.) A line shows
   * the completed buckets, so it changes once every 5 s, not on every report (the values beside
   * it show the latest); points are integers in bucket and band units, a completed bucket is
   * appended to a kept string, and the line moves left by a translate. */
  const CAP = 60;
  const BUCKET_S = 5;
  const BAND = 100; // viewBox units per metric band
  const PAD = 12;

  /* A frame draws at most this many tiles, and stops early once its script took FRAME_BUDGET_MS:
   * the style and layout that follow grow with the tiles changed (~0.1 ms each on a 2-core
   * machine), so a frame stays well inside 16 ms however large the batch; the rest is drawn in
   * the next frames, oldest first (updates arrive at most 4 times a second: 15 frames apart). */
  const MAX_TILES_PER_FRAME = 8;
  const FRAME_BUDGET_MS = 2;

  const nodes = new Map(); // name -> node record
  const gpus = new Map(); // uuid -> gpu record
  const dirtyGpus = new Set();
  const dirtyNodes = new Set();
  let scheduled = false;
  let batchGpus = 0; // GPU updates merged since the last frame
  let order = []; // node records in display order

  const perf = (window.dashPerf = {
    frames: [], // [GPU updates merged since the last frame, tiles drawn, script ms, style+layout ms]
    latencies: [], // per tile drawn for an update: ms from the update's arrival to its frame's layout
    longFrames: [], // long animation frames (Chromium), ms
    take() {
      const taken = { frames: this.frames, latencies: this.latencies, longFrames: this.longFrames };
      this.frames = [];
      this.latencies = [];
      this.longFrames = [];
      return taken;
    },
    mode: NAIVE ? "naive" : EAGER ? "eager" : "incremental",
  });
  if (PERF && window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes("long-animation-frame")) {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) if (perf.longFrames.length < 10000) perf.longFrames.push(entry.duration);
    }).observe({ type: "long-animation-frame", buffered: false });
  }

  // ---- records ----

  function history() {
    return {
      t: new Float64Array(CAP),
      util: new Float32Array(CAP),
      mem: new Float32Array(CAP),
      temp: new Float32Array(CAP),
      power: new Float32Array(CAP),
      sm: new Float32Array(CAP),
      start: 0,
      n: 0,
      bucket: -1,
      smMax: 0,
    };
  }

  function pushPoint(g, t) {
    const h = g.hist;
    const bucket = Math.floor(t / BUCKET_S);
    if (h.n && bucket < h.bucket) return; // older than what the line already shows
    let at;
    if (h.n && bucket === h.bucket) {
      at = (h.start + h.n - 1) % CAP;
    } else if (h.n < CAP) {
      at = (h.start + h.n) % CAP;
      h.n += 1;
    } else {
      at = h.start;
      h.start = (h.start + 1) % CAP;
    }
    h.bucket = bucket;
    h.t[at] = t;
    const d = g.data;
    for (const field of FIELDS) h[field][at] = d[field] == null ? NaN : d[field];
    if (d.sm > h.smMax) h.smMax = d.sm;
  }

  function loadHistory(g, series) {
    g.hist = history();
    g.spark = null;
    if (!series) return;
    const saved = g.data;
    for (let i = 0; i < series.t.length; i++) {
      g.data = { util: series.util[i], mem: series.mem[i], temp: series.temp[i], power: series.power[i], sm: null };
      pushPoint(g, series.t[i]);
    }
    g.data = saved;
  }

  function adoptGpu(el, node) {
    const f = {};
    for (const span of el.querySelectorAll("[data-f]")) {
      if (!span.firstChild) span.append("");
      f[span.dataset.f] = span.firstChild;
    }
    const lines = {};
    for (const line of el.querySelectorAll("polyline")) lines[line.dataset.s] = line;
    const group = el.querySelector(".spark g");
    return {
      uuid: el.dataset.gpu,
      node: node,
      el: el,
      f: f,
      lines: lines,
      group: group,
      spark: null,
      dirtySince: 0,
      data: {},
      hist: history(),
      shown: {},
      deferred: false,
    };
  }

  function adoptNode(el) {
    const parts = {};
    for (const part of el.querySelectorAll(".nh [data-f]")) parts[part.dataset.f] = part;
    const n = { name: el.dataset.node, el: el, parts: parts, gpusEl: el.querySelector(".gpus"), gpus: [], data: {} };
    n.visible = false;
    n.stale = el.dataset.stale === "1";
    n.shown = {};
    observer.observe(el);
    return n;
  }

  function newGpuElement(node, gpu) {
    const el = gpuTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.gpu = gpu.uuid;
    return el;
  }

  function setStatic(n) {
    const d = n.data;
    const el = n.el;
    el.id = "node-" + n.name;
    el.dataset.node = n.name;
    el.dataset.zone = d.zone || "";
    const labels = Object.keys(d.labels || {})
      .sort()
      .map((key) => key + "=" + d.labels[key])
      .join(" ");
    el.dataset.labels = labels;
    el.dataset.draining = d.draining ? "1" : "0";
    const heading = el.querySelector("h2");
    heading.id = "nh-" + n.name;
    el.setAttribute("aria-labelledby", heading.id);
    const p = n.parts;
    p.link.href = nodeUrl.replace("__node__", encodeURIComponent(n.name));
    Dash.setText(p.link, n.name);
    p.drain.hidden = !d.draining;
    p.sim.hidden = !d.sim;
    Dash.setText(p.zone, d.zone || "\u2013");
    Dash.setText(p.roles, (d.roles || []).join(", "));
    Dash.setText(p.labels, labels);
    if (p.admin) p.admin.href = d.admin;
    n.search = [n.name, d.zone, labels, (d.roles || []).join(" ")].join(" ").toLowerCase();
  }

  function upsertNode(nd, histories, fresh) {
    let n = nodes.get(nd.name);
    if (!n) {
      const existing = document.getElementById("node-" + nd.name);
      const el = existing || nodeTemplate.content.firstElementChild.cloneNode(true);
      n = adoptNode(el);
      n.name = nd.name;
      nodes.set(n.name, n);
      if (!existing) grid.append(el);
      const none = document.getElementById("no-nodes");
      if (none) none.remove();
    }
    const { gpus: list, ...data } = nd;
    n.data = data;
    setStatic(n);
    const wanted = new Set(list.map((gpu) => gpu.uuid));
    for (const g of n.gpus) {
      if (!wanted.has(g.uuid)) {
        g.el.remove();
        gpus.delete(g.uuid);
        dirtyGpus.delete(g);
      }
    }
    n.gpus = [];
    for (const gpu of list) {
      let g = gpus.get(gpu.uuid);
      if (!g) {
        const el = n.el.querySelector('[data-gpu="' + CSS.escape(gpu.uuid) + '"]') || newGpuElement(n, gpu);
        g = adoptGpu(el, n);
        gpus.set(g.uuid, g);
      }
      g.node = n;
      g.data = Object.assign({}, gpu);
      if (histories && gpu.uuid in histories) loadHistory(g, histories[gpu.uuid]);
      else if (fresh) g.hist = history();
      if (g.el.parentNode !== n.gpusEl || n.gpusEl.children[n.gpus.length] !== g.el) {
        n.gpusEl.insertBefore(g.el, n.gpusEl.children[n.gpus.length] || null);
      }
      g.el.href = nodeUrl.replace("__node__", encodeURIComponent(n.name)) + "#gpu-" + gpu.index;
      g.shown = {};
      n.gpus.push(g);
      dirtyGpus.add(g);
    }
    n.shown = {};
    dirtyNodes.add(n);
    return n;
  }

  function removeNode(name) {
    const n = nodes.get(name);
    if (!n) return;
    observer.unobserve(n.el);
    n.el.remove();
    for (const g of n.gpus) {
      gpus.delete(g.uuid);
      dirtyGpus.delete(g);
    }
    dirtyNodes.delete(n);
    nodes.delete(name);
  }

  // ---- drawing ----

  function sparkY(g, field, band, value) {
    if (value !== value) return null;
    const d = g.data;
    const [low, high] =
      field === "util" ? [0, 100]
      : field === "mem" ? [0, d.mem_total || 1]
      : field === "temp" ? [20, 100]
      : field === "power" ? [0, d.power_limit || 1]
      : [0, g.hist.smMax || 1];
    const fraction = Math.min(1, Math.max(0, (value - low) / (high - low)));
    return band * BAND + PAD + Math.round((1 - fraction) * (BAND - 2 * PAD));
  }

  function sparkPoint(g, at, origin) {
    const h = g.hist;
    const x = Math.floor(h.t[at] / BUCKET_S) - origin;
    const points = [];
    for (let s = 0; s < FIELDS.length; s++) {
      const y = sparkY(g, FIELDS[s], s, h[FIELDS[s]][at]);
      points.push(y === null ? "" : x + "," + y + " ");
    }
    return points;
  }

  function rebuildSpark(g, scale) {
    const h = g.hist;
    const origin = Math.floor(h.t[h.start] / BUCKET_S);
    const prefix = ["", "", "", "", ""];
    for (let i = 0; i < h.n - 1; i++) {
      const point = sparkPoint(g, (h.start + i) % CAP, origin);
      for (let s = 0; s < FIELDS.length; s++) prefix[s] += point[s];
    }
    g.spark = { origin: origin, last: h.bucket, prefix: prefix, count: h.n - 1, scale: scale, shift: null };
  }

  function drawSpark(g) {
    const h = g.hist;
    if (h.n < 2) return;
    const d = g.data;
    const scale = d.mem_total + "|" + d.power_limit + "|" + h.smMax;
    let sp = g.spark;
    if (sp && sp.scale === scale && h.bucket === sp.last) return; // no bucket completed since
    if (!sp || sp.scale !== scale || h.bucket !== sp.last + 1 || sp.count >= CAP + 12) {
      rebuildSpark(g, scale);
      sp = g.spark;
    } else {
      // The bucket that was newest is complete: it joins the line.
      const previous = (h.start + h.n - 2) % CAP;
      const point = sparkPoint(g, previous, sp.origin);
      for (let s = 0; s < FIELDS.length; s++) sp.prefix[s] += point[s];
      sp.count += 1;
      sp.last = h.bucket;
    }
    for (let s = 0; s < FIELDS.length; s++) g.lines[FIELDS[s]].setAttribute("points", sp.prefix[s]);
    // The newest complete bucket at the right edge.
    g.group.setAttribute("transform", "translate(" + (CAP - 1 - (h.bucket - 1 - sp.origin)) + " 0)");
  }

  function renderGpu(g, now) {
    const d = g.data;
    const shown = g.shown;
    const state = Dash.tileState(d, g.node.stale);
    if (state !== shown.state) {
      g.el.dataset.state = state;
      shown.state = state;
    }
    const word = Dash.stateWord(d, state);
    const texts = {
      util: Dash.fmt.pct(d.util),
      mem: Dash.fmt.mem(d.mem, d.mem_total),
      temp: Dash.fmt.celsius(d.temp),
      power: Dash.fmt.watts(d.power, d.power_limit),
      sm: Dash.fmt.mhz(d.sm),
      word: word,
      name: d.name || "",
      index: "GPU " + (d.index == null ? "" : d.index),
    };
    const f = g.f;
    for (const key in texts) {
      if (shown[key] !== texts[key]) {
        shown[key] = texts[key];
        if (f[key]) f[key].nodeValue = texts[key];
      }
    }
    drawSpark(g);
    g.deferred = false;
  }

  function renderNode(n, now) {
    const d = n.data;
    const shown = n.shown;
    if (shown.health !== d.health) {
      shown.health = d.health;
      n.el.dataset.health = d.health || "unknown";
      Dash.setText(n.parts.health, d.health || "unknown");
    }
    const stale = n.stale ? "1" : "0";
    if (shown.stale !== stale) {
      shown.stale = stale;
      n.el.dataset.stale = stale;
    }
    Dash.setText(n.parts.age, Dash.fmt.age(d.seen == null ? null : now - d.seen));
  }

  const totalsEls = {};
  for (const el of document.querySelectorAll("[data-t]")) totalsEls[el.dataset.t] = el;

  function renderTotals() {
    let healthy = 0;
    let unhealthy = 0;
    let draining = 0;
    let count = 0;
    let utilSum = 0;
    let utilN = 0;
    let mem = 0;
    let memTotal = 0;
    let power = 0;
    let powerLimit = 0;
    for (const n of nodes.values()) {
      if (n.data.health === "healthy") healthy++;
      else if (n.data.health === "unhealthy") unhealthy++;
      if (n.data.draining) draining++;
      for (const g of n.gpus) {
        const d = g.data;
        count++;
        if (d.util != null) {
          utilSum += d.util;
          utilN++;
        }
        mem += d.mem || 0;
        memTotal += d.mem_total || 0;
        power += d.power || 0;
        powerLimit += d.power_limit || 0;
      }
    }
    Dash.setText(totalsEls.nodes, String(nodes.size));
    Dash.setText(totalsEls.healthy, String(healthy));
    Dash.setText(totalsEls.unhealthy, String(unhealthy));
    totalsEls.unhealthy.toggleAttribute("data-zero", unhealthy === 0);
    Dash.setText(totalsEls.draining, String(draining));
    Dash.setText(totalsEls.gpus, String(count));
    Dash.setText(totalsEls.util, Dash.fmt.pct(utilN ? Math.round(utilSum / utilN) : null));
    Dash.setText(totalsEls.mem, Dash.fmt.memTotal(mem, memTotal));
    Dash.setText(totalsEls.power, Dash.fmt.powerTotal(power, powerLimit));
  }

  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(NAIVE ? frameNaive : frame);
    }
  }

  /* perf=1: the frame's cost, and for each tile drawn because of an update, how long the update
   * waited to be on screen (tiles drawn because they scrolled into view do not count). */
  function record(started, arrivals) {
    if (!PERF) return;
    const scripted = performance.now();
    void document.body.offsetHeight; // style and layout now, inside the measurement (the frame would do it next)
    const laidOut = performance.now();
    if (perf.frames.length < 100000) perf.frames.push([batchGpus, arrivals.length, scripted - started, laidOut - scripted]);
    for (const arrived of arrivals) if (arrived && perf.latencies.length < 100000) perf.latencies.push(laidOut - arrived);
  }

  function frame() {
    scheduled = false;
    const started = performance.now();
    const now = Dash.now();
    const arrivals = [];
    for (const g of dirtyGpus) {
      if (!EAGER && !g.node.visible) {
        g.deferred = true; // drawn when its card scrolls into view
        g.dirtySince = 0;
        dirtyGpus.delete(g);
        continue;
      }
      const full = arrivals.length >= MAX_TILES_PER_FRAME || performance.now() - started > FRAME_BUDGET_MS;
      if (!EAGER && arrivals.length && full) break;
      renderGpu(g, now);
      dirtyGpus.delete(g);
      arrivals.push(g.dirtySince);
      g.dirtySince = 0;
    }
    for (const n of dirtyNodes) renderNode(n, now);
    dirtyNodes.clear();
    renderTotals();
    record(started, arrivals);
    batchGpus = 0;
    if (dirtyGpus.size) schedule(); // the rest next frame
  }

  /* The baseline the benchmark compares against: every card rebuilt from the templates and every
   * sparkline redrawn on each update, as a page without change tracking would do. */
  function frameNaive() {
    scheduled = false;
    const started = performance.now();
    const now = Dash.now();
    const fragment = document.createDocumentFragment();
    const arrivals = [];
    for (const n of order.length === nodes.size ? order : Array.from(nodes.values())) {
      const el = nodeTemplate.content.firstElementChild.cloneNode(true);
      const parts = {};
      for (const part of el.querySelectorAll(".nh [data-f]")) parts[part.dataset.f] = part;
      const hidden = n.el.hidden;
      Object.assign(n, { el: el, parts: parts, gpusEl: el.querySelector(".gpus"), shown: {} });
      el.hidden = hidden;
      setStatic(n);
      renderNode(n, now);
      for (const g of n.gpus) {
        const tile = newGpuElement(n, g.data);
        const fresh = adoptGpu(tile, n);
        Object.assign(g, { el: tile, f: fresh.f, lines: fresh.lines, group: fresh.group, spark: null, shown: {} });
        tile.href = nodeUrl.replace("__node__", encodeURIComponent(n.name)) + "#gpu-" + g.data.index;
        renderGpu(g, now);
        n.gpusEl.append(tile);
        arrivals.push(g.dirtySince);
        g.dirtySince = 0;
      }
      fragment.append(el);
    }
    grid.replaceChildren(fragment);
    dirtyGpus.clear();
    dirtyNodes.clear();
    renderTotals();
    record(started, arrivals);
    batchGpus = 0;
  }

  // ---- visibility ----

  const observer = new IntersectionObserver(
    function (entries) {
      let any = false;
      for (const entry of entries) {
        const n = nodes.get(entry.target.dataset.node);
        if (!n || n.el !== entry.target) continue;
        n.visible = entry.isIntersecting;
        if (n.visible) {
          for (const g of n.gpus) {
            if (g.deferred) {
              dirtyGpus.add(g);
              any = true;
            }
          }
        }
      }
      if (any) schedule();
    },
    { rootMargin: "200px 0px" },
  );

  // ---- socket ----

  function restale(n, now) {
    const stale = Dash.isStale(n.data, now);
    if (stale !== n.stale) {
      n.stale = stale;
      for (const g of n.gpus) dirtyGpus.add(g);
    }
    dirtyNodes.add(n);
  }

  let live = false;

  function onSnapshot(message) {
    live = true;
    const names = new Set();
    for (const nd of message.nodes) {
      upsertNode(nd, null, false); // sparklines keep what they have until the history frames arrive
      names.add(nd.name);
    }
    for (const name of Array.from(nodes.keys())) if (!names.has(name)) removeNode(name);
    const now = Dash.now();
    for (const n of nodes.values()) restale(n, now);
    applyFilters();
    applySort(true);
    schedule();
  }

  function onUpdate(message) {
    const now = Dash.now();
    if (message.removed) for (const name of message.removed) removeNode(name);
    if (message.refresh) {
      for (const nd of message.refresh) restale(upsertNode(nd, message.history, false), now);
      applyFilters();
      applySort(true);
    }
    if (message.nodes) {
      for (const name in message.nodes) {
        const n = nodes.get(name);
        if (!n) continue;
        Object.assign(n.data, message.nodes[name]);
        restale(n, now);
      }
    }
    if (message.gpus) {
      for (const uuid in message.gpus) {
        const g = gpus.get(uuid);
        if (!g) continue;
        Object.assign(g.data, message.gpus[uuid]);
        pushPoint(g, g.node.data.seen || message.time);
        dirtyGpus.add(g);
        if (!g.dirtySince) g.dirtySince = performance.now();
        batchGpus++;
      }
    }
    schedule();
  }

  function onHistory(message) {
    for (const uuid in message.gpus) {
      const g = gpus.get(uuid);
      if (!g) continue;
      loadHistory(g, message.gpus[uuid]);
      pushPoint(g, g.node.data.seen || message.time);
      dirtyGpus.add(g);
    }
    schedule();
  }

  // Ages move and nodes go stale without any message: look once a second.
  setInterval(function () {
    if (!live) return; // the server's first paint stands until the snapshot
    const now = Dash.now();
    for (const n of nodes.values()) {
      if (n.visible || Dash.isStale(n.data, now) !== n.stale) restale(n, now);
    }
    schedule();
  }, 1000);

  // ---- filters and sorting ----

  const search = document.getElementById("f-search");
  const zone = document.getElementById("f-zone");
  const label = document.getElementById("f-label");
  const health = document.getElementById("f-health");
  const sort = document.getElementById("f-sort");
  const count = document.getElementById("f-count");

  function applyFilters() {
    const text = search.value.trim().toLowerCase();
    let shown = 0;
    for (const n of nodes.values()) {
      const d = n.data;
      let ok = true;
      if (zone.value && d.zone !== zone.value) ok = false;
      if (ok && label.value && !(" " + n.el.dataset.labels + " ").includes(" " + label.value + " ")) ok = false;
      if (ok && health.value) {
        if (health.value === "stale") ok = n.stale;
        else if (health.value === "draining") ok = !!d.draining;
        else ok = d.health === health.value;
      }
      if (ok && text) {
        ok = (n.search || n.name).includes(text) || n.gpus.some((g) => (g.data.name || "").toLowerCase().includes(text));
      }
      n.el.hidden = !ok;
      if (ok) shown++;
    }
    Dash.setText(count, shown === nodes.size ? nodes.size + " nodes" : shown + " of " + nodes.size + " nodes");
  }

  function average(n, field) {
    let sum = 0;
    let k = 0;
    for (const g of n.gpus) {
      let value = g.data[field];
      if (field === "mem" && g.data.mem_total) value = value / g.data.mem_total;
      if (value != null && value === value) {
        sum += value;
        k++;
      }
    }
    return k ? sum / k : -1;
  }

  function applySort(force) {
    const key = sort.value;
    const list = Array.from(nodes.values());
    if (key === "name") list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    else list.sort((a, b) => average(b, key) - average(a, key) || (a.name < b.name ? -1 : 1));
    const changedOrder = force || list.some((n, i) => order[i] !== n);
    order = list;
    if (!changedOrder || NAIVE) return;
    for (let i = 0; i < list.length; i++) {
      if (grid.children[i] !== list[i].el) grid.insertBefore(list[i].el, grid.children[i] || null);
    }
  }

  for (const control of [search, zone, label, health]) control.addEventListener("input", applyFilters);
  sort.addEventListener("change", () => applySort(true));
  // Sorted by a live value: re-sort every 10 s at most, so cards do not jump under the reader's eyes.
  setInterval(() => sort.value !== "name" && applySort(false), 10000);

  // ---- keyboard: j/k between nodes, arrows between tiles ----

  Dash.onKey = function (event) {
    const active = document.activeElement;
    const visible = order.filter((n) => !n.el.hidden);
    if (event.key === "j" || event.key === "k") {
      const current = active && active.closest ? active.closest(".node") : null;
      let at = visible.findIndex((n) => n.el === current);
      at = event.key === "j" ? at + 1 : at < 0 ? 0 : at - 1;
      const target = visible[Math.max(0, Math.min(visible.length - 1, at))];
      if (target) {
        target.parts.link.focus();
        target.el.scrollIntoView({ block: "nearest" });
      }
      event.preventDefault();
    } else if (event.key.startsWith("Arrow") && active && active.classList.contains("gpu")) {
      const card = active.closest(".node");
      const at = visible.findIndex((n) => n.el === card);
      const near = visible.slice(Math.max(0, at - 1), at + 2);
      const tiles = [];
      for (const n of near) for (const g of n.gpus) tiles.push(g.el);
      if (Dash.moveFocus(tiles, active, event.key)) event.preventDefault();
    }
  };

  if (PERF) perf.internals = { gpus: gpus, nodes: nodes, renderGpu: renderGpu, drawSpark: drawSpark, frame: frame };

  // ---- start: adopt the server's first paint, then go live ----
  for (const el of grid.querySelectorAll(".node")) {
    const n = adoptNode(el);
    nodes.set(n.name, n);
    for (const tile of el.querySelectorAll(".gpu")) n.gpus.push(adoptGpu(tile, n));
    for (const g of n.gpus) gpus.set(g.uuid, g);
  }
  applyFilters();
  applySort(false);
  Dash.connect({ snapshot: onSnapshot, update: onUpdate, history: onHistory });
})();
