/* infermesh dashboard: what every page shares.
 *
 * Dash.connect(): the one WebSocket (/ws/dashboard/), reconnecting with backoff; each (re)connect
 * starts with a snapshot. Dash.fmt: readable units, exactly as dashboard/formats.py writes them
 * for the server's first paint. Dash.tileState: the tile colours' rule, as in formats.py.
 * Keyboard shortcuts and the help panel. No dependencies.
 */
(function () {
  "use strict";

  const Dash = (window.Dash = {});
  const body = document.body;
  const DASH = "\u2013";

  // ---- units (keep in step with dashboard/formats.py) ----
  const gib = (mib) => (mib == null ? DASH : (mib / 1024).toFixed(1));
  Dash.fmt = {
    pct: (v) => (v == null ? DASH : v + " %"),
    gib: gib,
    mem: (used, total) => (used == null ? DASH : total ? gib(used) + "/" + gib(total) + " GiB" : gib(used) + " GiB"),
    watts: (v, limit) => (v == null ? DASH : limit ? v + "/" + limit + " W" : v + " W"),
    memTotal: (used, total) =>
      used == null || !total || total < 1024 * 1024
        ? Dash.fmt.mem(used, total)
        : (used / 1048576).toFixed(1) + "/" + (total / 1048576).toFixed(1) + " TiB",
    powerTotal: (v, limit) =>
      v == null || !limit || limit < 10000
        ? Dash.fmt.watts(v, limit)
        : (v / 1000).toFixed(1) + "/" + (limit / 1000).toFixed(1) + " kW",
    celsius: (v) => (v == null ? DASH : v + " \u00b0C"),
    mhz: (v) => (v == null ? DASH : v + " MHz"),
    num: (v, unit) => (v == null ? DASH : unit ? v + " " + unit : String(v)),
    age: function (seconds) {
      if (seconds == null) return "never";
      seconds = Math.max(0, seconds);
      if (seconds < 90) return Math.round(seconds) + " s ago";
      if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
      return Math.round(seconds / 3600) + " h ago";
    },
  };
  // An element with attributes (`dataset` sets data-*) and children: the pages build their rows with it.
  Dash.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const key in attrs || {}) {
      if (key === "dataset") Object.assign(node.dataset, attrs[key]);
      else node.setAttribute(key, attrs[key]);
    }
    node.append(...children);
    return node;
  };

  Dash.HOT_C = 80;
  Dash.FULL_SHARE = 0.95;
  Dash.STALE_INTERVALS = 3;

  // The server's clock, as of the last frame: ages are computed on it, not on this machine's.
  let clockOffset = 0;
  Dash.now = () => Date.now() / 1000 + clockOffset;
  Dash.setServerTime = (t) => {
    if (typeof t === "number") clockOffset = t - Date.now() / 1000;
  };

  Dash.isStale = function (node, now) {
    if (node.health === "unhealthy" || node.seen == null) return true;
    return !!node.interval && (now || Dash.now()) - node.seen > Dash.STALE_INTERVALS * node.interval;
  };
  Dash.tileState = function (gpu, stale) {
    if (stale || gpu.util == null) return "stale";
    if (gpu.ecc || gpu.xid || (gpu.err && gpu.err.length)) return "error";
    if ((gpu.temp || 0) >= Dash.HOT_C) return "hot";
    if (gpu.mem_total && (gpu.mem || 0) >= Dash.FULL_SHARE * gpu.mem_total) return "full";
    return "ok";
  };
  const WORDS = { stale: "stale", error: "error", hot: "hot", full: "mem full", ok: "" };
  Dash.stateWord = function (gpu, state) {
    if (state !== "error") return WORDS[state];
    return gpu.xid ? "XID " + gpu.xid : gpu.ecc ? "ECC" : "error";
  };

  // Okabe-Ito colours (readable with the common colour-vision deficiencies), one per metric.
  Dash.SERIES = {
    util: "#56B4E9",
    mem: "#E69F00",
    temp: "#D55E00",
    power: "#009E73",
    sm: "#CC79A7",
  };

  // Text changes only when it differs: most values stay the same from one frame to the next.
  Dash.setText = function (el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  };

  // ---- the socket ----
  const conn = document.getElementById("conn");
  function status(state, text) {
    if (!conn) return;
    conn.dataset.state = state;
    Dash.setText(conn, text);
  }

  Dash.received = { messages: 0, chars: 0 }; // what the socket brought (the render benchmark reads it)

  /* handlers: {snapshot(msg), update(msg), history(msg), truncated(msg), query() -> extra query parameters};
   the last three optional. */
  Dash.connect = function (handlers) {
    const base = body.dataset.socket;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let attempt = 0;
    let socket = null;
    let retryTimer = null;

    function url() {
      const query = new URLSearchParams(body.dataset.socketQuery || "");
      const extra = handlers.query ? handlers.query() : {};
      for (const key in extra) query.set(key, extra[key]);
      return scheme + "//" + location.host + base + "?" + query.toString();
    }

    function open() {
      retryTimer = null;
      status(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting\u2026" : "connecting\u2026");
      socket = new WebSocket(url());
      Dash.socket = socket;
      socket.onmessage = function (event) {
        Dash.received.messages += 1;
        Dash.received.chars += event.data.length;
        const message = JSON.parse(event.data);
        Dash.setServerTime(message.time);
        if (message.kind === "snapshot") {
          attempt = 0;
          status("live", "live");
          Dash.connectedAt = performance.now();
          Dash.snapshots = (Dash.snapshots || 0) + 1;
          handlers.snapshot(message);
        } else if (message.kind === "update") {
          handlers.update(message);
        } else if (message.kind === "history" && handlers.history) {
          handlers.history(message);
        } else if (message.kind === "error") {
          socket.refusal = message;
        } else if (message.kind === "backlog_truncated" && handlers.truncated) {
          handlers.truncated(message);
        }
      };
      socket.onclose = function (event) {
        if (event.code === 4401) {
          status("offline", "signed out");
          location.assign(body.dataset.login + "?next=" + encodeURIComponent(location.pathname + location.search));
          return;
        }
        if (event.code === 4400 || event.code === 4404) {
          const detail = socket.refusal ? socket.refusal.detail || JSON.stringify(socket.refusal.errors) : "";
          status("offline", "not live: " + detail);
          return;
        }
        if (event.code === 4000) {
          open(); // more backlog: continue at once after the last event received
          return;
        }
        // 0.5, 1, 2, 4, 8 then 10 s, each with up to 30 % jitter so a restarted server is not hit at once.
        const delay = Math.min(10, 0.5 * Math.pow(2, attempt)) * (1 + Math.random() * 0.3);
        attempt += 1;
        status("reconnecting", "reconnecting in " + Math.ceil(delay) + " s");
        retryTimer = setTimeout(open, delay * 1000);
      };
    }
    open();
    return {
      reconnectNow: function () {
        if (retryTimer) {
          clearTimeout(retryTimer);
          open();
        }
      },
    };
  };

  // ---- keyboard ----
  const help = document.getElementById("help");
  const helpToggle = document.getElementById("help-toggle");
  function showHelp(show) {
    if (!help) return;
    help.hidden = !show;
    helpToggle.setAttribute("aria-expanded", String(show));
  }
  if (helpToggle) helpToggle.addEventListener("click", () => showHelp(help.hidden));

  const typing = (el) => el && (el.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));
  const PAGE_KEYS = { f: 0, m: 1, e: 2 }; // the order of the pages in the header's nav
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "Escape") {
      showHelp(false);
      if (typing(document.activeElement)) document.activeElement.blur();
      return;
    }
    if (typing(event.target)) return;
    if (event.key === "?") {
      showHelp(help.hidden);
      event.preventDefault();
    } else if (event.key === "/") {
      const search = document.querySelector(".filters input, .filters select");
      if (search) {
        search.focus();
        event.preventDefault();
      }
    } else if (event.key in PAGE_KEYS) {
      const link = document.querySelectorAll("nav a")[PAGE_KEYS[event.key]];
      if (link) location.assign(link.href);
    } else if (Dash.onKey) {
      Dash.onKey(event);
    }
  });

  /* Arrow keys between items laid out in a grid (GPU tiles): the nearest item in that direction. */
  Dash.moveFocus = function (items, from, key) {
    const origin = from.getBoundingClientRect();
    const ox = origin.left + origin.width / 2;
    const oy = origin.top + origin.height / 2;
    let best = null;
    let bestScore = Infinity;
    for (const item of items) {
      if (item === from) continue;
      const box = item.getBoundingClientRect();
      if (!box.width) continue;
      const dx = box.left + box.width / 2 - ox;
      const dy = box.top + box.height / 2 - oy;
      const ahead = { ArrowRight: dx > 1, ArrowLeft: dx < -1, ArrowDown: dy > 1, ArrowUp: dy < -1 }[key];
      if (!ahead) continue;
      const along = key === "ArrowRight" || key === "ArrowLeft" ? Math.abs(dx) : Math.abs(dy);
      const across = key === "ArrowRight" || key === "ArrowLeft" ? Math.abs(dy) : Math.abs(dx);
      const score = along + across * 4;
      if (score < bestScore) {
        bestScore = score;
        best = item;
      }
    }
    if (best) {
      best.focus();
      best.scrollIntoView({ block: "nearest" });
    }
    return best;
  };

  // ---- events lists (node page, events page) ----
  Dash.eventRow = function (event, nodeUrl) {
    const li = document.createElement("li");
    li.className = "ev";
    li.dataset.event = event.id;
    li.dataset.type = event.type;
    const time = document.createElement("time");
    time.dateTime = event.time;
    time.textContent = (event.time || "").slice(11, 19);
    const type = document.createElement("span");
    type.className = "et";
    type.textContent = event.type;
    li.append(time, " ", type, " ");
    if (event.node) {
      const link = document.createElement("a");
      link.className = "en";
      link.href = nodeUrl.replace("__node__", encodeURIComponent(event.node));
      link.textContent = event.node;
      li.append(link, " ");
    }
    const actor = document.createElement("span");
    actor.className = "ea";
    actor.textContent = event.actor || "";
    const data = document.createElement("span");
    data.className = "ed";
    data.textContent = Object.entries(event.data || {})
      .filter(([key]) => key !== "seq")
      .map(([key, value]) => key + "=" + (typeof value === "object" ? JSON.stringify(value) : value))
      .join(" ");
    li.append(actor, " ", data);
    return li;
  };
  Dash.prependEvents = function (list, events, nodeUrl, keep) {
    const none = list.querySelector(".none");
    if (none && events.length) none.remove();
    const seen = new Set(Array.from(list.children, (li) => li.dataset.event));
    // Oldest first, each prepended: the newest ends on top.
    const ordered = events.slice().sort((a, b) => a.id - b.id);
    for (const event of ordered) {
      if (seen.has(String(event.id))) continue;
      list.prepend(Dash.eventRow(event, nodeUrl));
    }
    while (list.children.length > keep) list.lastElementChild.remove();
  };
  Dash.nodeUrl = "/dashboard/nodes/__node__/";
})();
