/* The models page: per model, each target (node/runtime) with Triton's state, queue, rate and
 * latency, the routers' rate, share, p50/p99 and errors, ejected targets, and a chart of the
 * inference rate by target (uPlot). Rebuilt from each snapshot, then kept current by updates. */
(function () {
  "use strict";

  const Dash = window.Dash;
  const holder = document.getElementById("models");
  const WINDOW_S = 300;
  const charting = typeof window.uPlot === "function";
  // Charts always span the history window, ending now (a single point would otherwise span years).
  const windowRange = () => [Dash.now() - WINDOW_S, Dash.now()];
  const COLOURS = ["#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#0072B2", "#F0E442", "#FFFFFF"];

  let models = []; // [{name, targets: [...], chart, figure}]
  const rows = new Map(); // instance key -> {row, target, history: [[t], [rate]]}
  let router = {};
  let ejected = {};
  let scheduled = false;
  const dirtyCharts = new Set();

  const el = Dash.el;

  const HEAD = ["target", "version", "state", "queue", "inferences/s", "latency (avg)", "routed/s", "share", "p50", "p99", "errors/s"];

  function targetRow(target) {
    const cell = (field) => el("td", { class: "num", dataset: { f: field } }, "\u2013");
    const head = el("th", { scope: "row" },
      el("a", { href: Dash.nodeUrl.replace("__node__", encodeURIComponent(target.node)) }, target.node),
      "/" + target.runtime + " ", el("span", { class: "badge ejected", dataset: { f: "ejected" } }, "ejected"));
    const row = el("tr", { dataset: { instance: target.key, target: target.target, modelState: target.state } },
      head, el("td", {}, target.version), el("td", { dataset: { f: "state" } }, ""),
      cell("queue"), cell("rate"), cell("latency"), cell("r_rate"), cell("r_share"), cell("r_p50"), cell("r_p99"), cell("r_errors"));
    return row;
  }

  function fillTriton(entry, values) {
    const cell = (name) => entry.row.querySelector('[data-f="' + name + '"]');
    if ("state" in values) {
      entry.row.dataset.modelState = values.state;
      Dash.setText(cell("state"), values.state + (values.reason ? " (" + values.reason + ")" : ""));
    }
    if ("queue" in values) Dash.setText(cell("queue"), Dash.fmt.num(values.queue));
    if ("rate" in values) Dash.setText(cell("rate"), Dash.fmt.num(values.rate));
    if ("latency" in values) Dash.setText(cell("latency"), Dash.fmt.num(values.latency, "ms"));
  }

  function fillRouter(entry) {
    const cell = (name) => entry.row.querySelector('[data-f="' + name + '"]');
    const figures = router[entry.model + "|" + entry.target.target] || {};
    Dash.setText(cell("r_rate"), Dash.fmt.num(figures.rate));
    Dash.setText(cell("r_share"), figures.share == null ? "\u2013" : Math.round(figures.share * 100) + " %");
    Dash.setText(cell("r_p50"), Dash.fmt.num(figures.p50, "ms"));
    Dash.setText(cell("r_p99"), Dash.fmt.num(figures.p99, "ms"));
    Dash.setText(cell("r_errors"), Dash.fmt.num(figures.errors));
    const out = ejected[entry.target.target];
    cell("ejected").hidden = !out;
    if (out) cell("ejected").title = "ejected by a router until " + new Date(out.until * 1000).toLocaleTimeString();
  }

  function chartData(model) {
    const tables = model.targets.map((target) => rows.get(target.key).history);
    if (!tables.length) return [[]];
    return tables.length === 1 ? tables[0] : window.uPlot.join(tables);
  }

  function makeChart(model) {
    if (!charting || !model.figure) return;
    const muted = "#a3adba";
    const grid = { stroke: "#323a46", width: 1 };
    const options = {
      width: Math.max(300, model.figure.clientWidth - 8),
      height: 150,
      scales: { x: { time: true, range: windowRange } },
      series: [{}].concat(
        model.targets.map((target, i) => ({ label: target.target, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true })),
      ),
      axes: [
        { stroke: muted, grid: grid, ticks: grid },
        { stroke: muted, grid: grid, ticks: grid, size: 44 },
      ],
    };
    model.chart = new window.uPlot(options, chartData(model), model.figure);
  }

  function snapshot(message) {
    router = message.router || {};
    ejected = message.ejected || {};
    rows.clear();
    models = message.models.map(function (data, index) {
      const heading = el("h2", { id: "m-" + (index + 1) }, data.name + " ");
      if (data.admin && document.body.dataset.staff === "1") heading.append(el("a", { class: "admin", href: data.admin }, "admin"));
      const thead = el("thead", {}, el("tr", {}, ...HEAD.map((name, i) => el("th", { scope: "col", class: i > 2 ? "num" : "" }, name))));
      const tbody = el("tbody");
      const model = { name: data.name, targets: data.targets, figure: null, chart: null };
      for (const target of data.targets) {
        const row = targetRow(target);
        const entry = { row: row, target: target, model: data.name, history: [target.history.t.slice(), target.history.rate.slice()] };
        rows.set(target.key, entry);
        fillTriton(entry, target);
        fillRouter(entry);
        tbody.append(row);
      }
      if (!data.targets.length) tbody.append(el("tr", {}, el("td", { colspan: "11", class: "none" }, "In the catalog; not loaded on any runtime.")));
      const section = el("section", { class: "model", dataset: { model: data.name }, "aria-labelledby": "m-" + (index + 1) },
        heading, el("table", { class: "grid-table" }, thead, tbody));
      if (data.targets.length) {
        model.figure = el("figure", { class: "chart wide", dataset: { chart: "rate" } }, el("figcaption", {}, "inferences/s by target, last 5 minutes"));
        section.append(model.figure);
      }
      model.section = section;
      return model;
    });
    if (!models.length) holder.replaceChildren(el("p", { class: "none" }, "No models yet: none in the catalog and none reported by a runtime."));
    else holder.replaceChildren(...models.map((model) => model.section));
    for (const model of models) makeChart(model);
  }

  function update(message) {
    if (message.instances) {
      for (const key in message.instances) {
        const entry = rows.get(key);
        if (!entry) continue;
        const values = message.instances[key];
        fillTriton(entry, values);
        if ("rate" in values) {
          const [times, rates] = entry.history;
          times.push(message.time);
          rates.push(values.rate);
          while (times.length && times[0] < message.time - WINDOW_S) {
            times.shift();
            rates.shift();
          }
          for (const model of models) if (model.name === entry.model) dirtyCharts.add(model);
        }
      }
    }
    if (message.router) {
      Object.assign(router, message.router);
      for (const entry of rows.values()) fillRouter(entry);
    }
    if (!scheduled && dirtyCharts.size) {
      scheduled = true;
      requestAnimationFrame(function () {
        scheduled = false;
        for (const model of dirtyCharts) if (model.chart) model.chart.setData(chartData(model));
        dirtyCharts.clear();
      });
    }
  }

  const embedded = JSON.parse(document.getElementById("snapshot").textContent);
  Dash.setServerTime(embedded.time);
  snapshot(embedded);
  Dash.connect({ snapshot: snapshot, update: update });
})();
