/* The node page: each GPU's values and charts (uPlot) over the history window, MIG, processes and
 * ECC where NVML has them; the node's runtimes and models; its recent events. The charts start
 * from the history the server embedded in the page, then follow the socket. */
(function () {
  "use strict";

  const Dash = window.Dash;
  const page = document.querySelector(".node-page");
  const nodeName = page.dataset.node;
  const WINDOW_S = 300;
  const CHARTS = {
    util: { label: "utilization", unit: "%", range: () => [0, 100] },
    mem: { label: "memory", unit: "GiB", range: (gpu) => [0, (gpu.mem_total || 1024) / 1024] },
    temp: { label: "temperature", unit: "\u00b0C", range: () => [20, 100] },
    power: { label: "power", unit: "W", range: (gpu) => [0, gpu.power_limit || 100] },
  };
  const charting = typeof window.uPlot === "function";
  // Charts always span the history window, ending now (a single point would otherwise span years).
  const windowRange = () => [Dash.now() - WINDOW_S, Dash.now()];

  const state = { node: {}, gpus: new Map() }; // uuid -> {data, el, charts: {field: {plot, data}}}
  let dirty = new Set();
  let scheduled = false;

  // ---- GPU panels ----

  const el = Dash.el;

  function newPanel(gpu) {
    const values = el("dl", { class: "values" });
    const rows = [
      ["util", "utilization"],
      ["mem", "memory"],
      ["temp", "temperature"],
      ["power", "power"],
      ["sm", "SM clock"],
      ["mem_util", "memory bus"],
      ["pstate", "P-state"],
      ["throttle", "throttle"],
      ["ecc", "ECC uncorrected"],
      ["xid", "XID (recent)"],
    ];
    for (const [field, label] of rows) {
      values.append(el("div", {}, el("dt", { class: "k-" + field }, label), el("dd", { dataset: { f: field } }, "\u2013")));
    }
    const charts = el("div", { class: "charts" });
    for (const field in CHARTS) {
      const caption = { util: "utilization %", mem: "memory GiB", temp: "temperature \u00b0C", power: "power W" }[field];
      charts.append(el("figure", { class: "chart", dataset: { chart: field } }, el("figcaption", {}, caption)));
    }
    return el(
      "section",
      { class: "gpu-panel", id: "gpu-" + gpu.index, tabindex: "-1", dataset: { gpu: gpu.uuid } },
      el("h3", {}, "GPU " + gpu.index + " ", el("span", { class: "gn" }, gpu.name || ""), " ",
        el("span", { class: "gw", dataset: { f: "word" } }, ""), " ", el("code", { class: "uuid" }, gpu.uuid)),
      values,
      charts,
      el("div", { class: "extras", dataset: { f: "extras" } }),
    );
  }

  function table(caption, head, rows) {
    const thead = el("thead", {}, el("tr", {}, ...head.map((name) => el("th", { scope: "col" }, name))));
    const tbody = el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, String(cell ?? "\u2013"))))));
    return el("table", { class: "grid-table" }, el("caption", {}, caption), thead, tbody);
  }

  function renderExtras(g) {
    const d = g.data;
    const key = JSON.stringify([d.mig, d.procs, d.ecc_all, d.xid_all, d.errors, d.clocks, d.fans, d.temp_mem, d.enc, d.dec]);
    if (key === g.extrasKey) return;
    g.extrasKey = key;
    const parts = [];
    const details = [];
    if (d.clocks && Object.keys(d.clocks).length) {
      details.push("clocks " + Object.entries(d.clocks).map(([k, v]) => k + " " + Dash.fmt.mhz(v)).join(", "));
    }
    if (d.temp_mem != null) details.push("memory temperature " + Dash.fmt.celsius(d.temp_mem));
    if (d.fans && d.fans.length) details.push("fans " + d.fans.map((v) => v + " %").join(", "));
    if (d.enc != null || d.dec != null) details.push("encoder " + Dash.fmt.pct(d.enc) + ", decoder " + Dash.fmt.pct(d.dec));
    if (details.length) parts.push(el("p", { class: "meta" }, details.join(" \u00b7 ")));
    if (d.mig && d.mig.length) {
      parts.push(table("MIG instances", ["profile", "GPU instance", "compute instance", "memory", "uuid"],
        d.mig.map((m) => [m.profile, m.gi, m.ci, Dash.fmt.mem(m.mem, m.mem_total), m.uuid])));
    }
    if (d.procs && d.procs.length) {
      parts.push(table("Processes", ["pid", "type", "memory"], d.procs.map((p) => [p.pid, p.type, Dash.fmt.mem(p.mem)])));
    }
    if (d.ecc_all && Object.keys(d.ecc_all).length) {
      parts.push(table("ECC errors", Object.keys(d.ecc_all), [Object.values(d.ecc_all)]));
    }
    if (d.xid_all && d.xid_all.count) {
      const at = d.xid_all.last_at ? new Date(d.xid_all.last_at * 1000).toLocaleString() : "\u2013";
      parts.push(table("XID errors since the agent started", ["count", "last XID", "at"], [[d.xid_all.count, d.xid_all.last, at]]));
    }
    if (d.errors && Object.keys(d.errors).length) {
      parts.push(el("p", { class: "problem" }, "NVML could not read: " +
        Object.entries(d.errors).map(([k, v]) => k + " (" + v + ")").join(", ")));
    }
    g.extras.replaceChildren(...parts);
  }

  function renderValues(g) {
    const d = g.data;
    const f = g.fields;
    const stale = Dash.isStale(state.node);
    const tile = Dash.tileState(d, stale);
    g.el.dataset.state = tile;
    Dash.setText(f.word, Dash.stateWord(d, tile));
    Dash.setText(f.util, Dash.fmt.pct(d.util));
    Dash.setText(f.mem, Dash.fmt.mem(d.mem, d.mem_total));
    Dash.setText(f.temp, Dash.fmt.celsius(d.temp));
    Dash.setText(f.power, Dash.fmt.watts(d.power, d.power_limit));
    Dash.setText(f.sm, Dash.fmt.mhz(d.sm));
    Dash.setText(f.mem_util, Dash.fmt.pct(d.mem_util));
    Dash.setText(f.pstate, d.pstate == null ? "\u2013" : "P" + d.pstate);
    Dash.setText(f.throttle, d.throttle && d.throttle.length ? d.throttle.join(", ") : "none");
    Dash.setText(f.ecc, d.ecc == null ? "\u2013" : String(d.ecc));
    Dash.setText(f.xid, d.xid == null ? "none" : String(d.xid));
    renderExtras(g);
  }

  // ---- charts ----

  function chartOptions(field, gpu, width) {
    const spec = CHARTS[field];
    const muted = "#a3adba";
    const grid = { stroke: "#323a46", width: 1 };
    return {
      width: width,
      height: 120,
      legend: { show: false },
      cursor: { y: false },
      scales: { x: { time: true, range: windowRange }, y: { range: () => spec.range(gpu) } },
      series: [{}, { label: spec.label, stroke: Dash.SERIES[field], width: 1.5, value: (u, v) => Dash.fmt.num(v, spec.unit) }],
      axes: [
        { stroke: muted, grid: grid, ticks: grid, size: 28 },
        { stroke: muted, grid: grid, ticks: grid, size: 44, values: (u, splits) => splits.map((v) => +v.toFixed(1)) },
      ],
    };
  }

  function chartValue(field, value) {
    if (value == null) return null;
    return field === "mem" ? value / 1024 : value;
  }

  function loadCharts(g, series) {
    if (!charting) return;
    for (const figure of g.el.querySelectorAll("[data-chart]")) {
      const field = figure.dataset.chart;
      const data = [[], []];
      if (series) {
        for (let i = 0; i < series.t.length; i++) {
          data[0].push(series.t[i]);
          data[1].push(chartValue(field, series[field][i]));
        }
      }
      const existing = g.charts[field];
      if (existing) {
        existing.data = data;
        existing.plot.setData(data);
      } else {
        const width = Math.max(200, figure.clientWidth - 8);
        g.charts[field] = { data: data, plot: new window.uPlot(chartOptions(field, g.data, width), data, figure) };
      }
    }
  }

  function appendPoint(g, t) {
    for (const field in g.charts) {
      const chart = g.charts[field];
      const [times, values] = chart.data;
      if (times.length && t <= times[times.length - 1]) continue;
      times.push(t);
      values.push(chartValue(field, g.data[field]));
      while (times.length && times[0] < t - WINDOW_S) {
        times.shift();
        values.shift();
      }
      chart.dirty = true;
    }
  }

  function adoptPanel(section) {
    const fields = {};
    for (const part of section.querySelectorAll("[data-f]")) fields[part.dataset.f] = part;
    return { el: section, fields: fields, extras: fields.extras, charts: {}, data: {} };
  }

  // ---- runtimes ----

  function renderRuntimes(runtimes) {
    const holder = document.getElementById("runtimes");
    if (!runtimes.length) {
      holder.replaceChildren(el("p", { class: "none" }, "No runtime reported on this node."));
      return;
    }
    holder.replaceChildren(
      ...runtimes.map(function (runtime) {
        const status = runtime.ready ? "ready" : runtime.live ? "live, not ready" : "unreachable";
        const heading = el("h3", {}, runtime.name + " ", el("code", {}, runtime.url || ""), " ",
          el("span", { class: "badge", dataset: { ok: runtime.ready ? "1" : "0" } }, status));
        if (runtime.version) heading.append(" ", el("span", { class: "meta" }, "Triton " + runtime.version));
        if (runtime.admin && document.body.dataset.staff === "1") {
          heading.append(" ", el("a", { class: "admin", href: runtime.admin }, "admin"));
        }
        const rows = runtime.models.map((model) => instanceRow(model));
        if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "6", class: "none" }, "No models reported.")));
        const head = ["model", "version", "state", "queue", "inferences/s", "latency (avg)"];
        const thead = el("thead", {}, el("tr", {}, ...head.map((name, i) => el("th", { scope: "col", class: i > 2 ? "num" : "" }, name))));
        const section = el("section", { class: "runtime", dataset: { runtime: runtime.name } }, heading);
        if (runtime.error) section.append(el("p", { class: "problem" }, runtime.error));
        section.append(el("table", { class: "grid-table" }, thead, el("tbody", {}, ...rows)));
        return section;
      }),
    );
  }

  function instanceRow(model) {
    const row = el("tr", { dataset: { instance: model.key, modelState: model.state } },
      el("th", { scope: "row" }, model.model), el("td", {}, model.version),
      el("td", { dataset: { f: "state" } }, ""), el("td", { class: "num", dataset: { f: "queue" } }, ""),
      el("td", { class: "num", dataset: { f: "rate" } }, ""), el("td", { class: "num", dataset: { f: "latency" } }, ""));
    fillInstance(row, model);
    return row;
  }

  function fillInstance(row, values) {
    const cell = (name) => row.querySelector('[data-f="' + name + '"]');
    if ("state" in values) {
      row.dataset.modelState = values.state;
      Dash.setText(cell("state"), values.state + (values.reason ? " (" + values.reason + ")" : ""));
    }
    if ("queue" in values) Dash.setText(cell("queue"), Dash.fmt.num(values.queue));
    if ("rate" in values) Dash.setText(cell("rate"), Dash.fmt.num(values.rate));
    if ("latency" in values) Dash.setText(cell("latency"), Dash.fmt.num(values.latency, "ms"));
  }

  // ---- node header ----

  function renderNode() {
    const d = state.node;
    page.dataset.health = d.health || "unknown";
    page.dataset.stale = Dash.isStale(d) ? "1" : "0";
    page.dataset.draining = d.draining ? "1" : "0";
    const part = (name) => page.querySelector('.nh [data-f="' + name + '"]');
    Dash.setText(part("health"), d.health || "unknown");
    part("drain").hidden = !d.draining;
    part("sim").hidden = !d.sim;
    Dash.setText(part("age"), Dash.fmt.age(d.seen == null ? null : Dash.now() - d.seen));
  }

  // ---- applying the socket's messages ----

  function snapshot(message) {
    state.node = Object.assign({}, message.node);
    delete state.node.gpus;
    const wanted = new Set(message.node.gpus.map((gpu) => gpu.uuid));
    for (const [uuid, g] of state.gpus) {
      if (!wanted.has(uuid)) {
        g.el.remove();
        state.gpus.delete(uuid);
      }
    }
    const heading = document.getElementById("gpus-heading");
    let after = heading;
    for (const gpu of message.node.gpus) {
      let g = state.gpus.get(gpu.uuid);
      if (!g) {
        const section = page.querySelector('.gpu-panel[data-gpu="' + CSS.escape(gpu.uuid) + '"]') || newPanel(gpu);
        g = adoptPanel(section);
        state.gpus.set(gpu.uuid, g);
      }
      if (after.nextElementSibling !== g.el) after.after(g.el);
      after = g.el;
      g.data = Object.assign({}, gpu);
      loadCharts(g, message.history[gpu.uuid]);
      renderValues(g);
    }
    const none = heading.parentNode.querySelector(":scope > p.none");
    if (none && state.gpus.size) none.remove();
    renderRuntimes(message.runtimes);
    Dash.prependEvents(document.getElementById("events"), message.events || [], Dash.nodeUrl, 50);
    renderNode();
  }

  function update(message) {
    if (message.nodes && message.nodes[nodeName]) Object.assign(state.node, message.nodes[nodeName]);
    if (message.gpus) {
      for (const uuid in message.gpus) {
        const g = state.gpus.get(uuid);
        if (!g) continue;
        Object.assign(g.data, message.gpus[uuid]);
        appendPoint(g, state.node.seen || message.time);
        dirty.add(g);
      }
    }
    if (message.instances) {
      for (const key in message.instances) {
        const row = document.querySelector('tr[data-instance="' + CSS.escape(key) + '"]');
        if (row) fillInstance(row, message.instances[key]);
      }
    }
    if (message.events) {
      Dash.prependEvents(document.getElementById("events"), message.events, Dash.nodeUrl, 50);
    }
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(frame);
    }
  }

  function frame() {
    scheduled = false;
    for (const g of dirty) {
      renderValues(g);
      for (const field in g.charts) {
        const chart = g.charts[field];
        if (chart.dirty) {
          chart.plot.setData(chart.data);
          chart.dirty = false;
        }
      }
    }
    dirty = new Set();
    renderNode();
  }

  setInterval(renderNode, 1000);
  if (charting) {
    new ResizeObserver(function () {
      for (const g of state.gpus.values()) {
        for (const field in g.charts) {
          const figure = g.el.querySelector('[data-chart="' + field + '"]');
          const width = Math.max(200, figure.clientWidth - 8);
          if (Math.abs(g.charts[field].plot.width - width) > 4) g.charts[field].plot.setSize({ width: width, height: 120 });
        }
      }
    }).observe(page);
  } else {
    for (const figure of document.querySelectorAll("[data-chart]")) {
      figure.append(Dash.chartsMissing || "Charts are not installed on this server (scripts/vendor-assets).");
    }
  }

  // j/k between GPU panels.
  Dash.onKey = function (event) {
    if (event.key !== "j" && event.key !== "k") return;
    const panels = Array.from(document.querySelectorAll(".gpu-panel"));
    const current = document.activeElement.closest ? document.activeElement.closest(".gpu-panel") : null;
    let at = panels.indexOf(current);
    at = event.key === "j" ? at + 1 : at < 0 ? 0 : at - 1;
    const target = panels[Math.max(0, Math.min(panels.length - 1, at))];
    if (target) {
      target.focus();
      target.scrollIntoView({ block: "start" });
    }
    event.preventDefault();
  };

  // The server's first paint, with its embedded snapshot: charts draw before the socket connects.
  const embedded = JSON.parse(document.getElementById("snapshot").textContent);
  Dash.setServerTime(embedded.time);
  snapshot(embedded);
  Dash.connect({ snapshot: snapshot, update: update });
})();
