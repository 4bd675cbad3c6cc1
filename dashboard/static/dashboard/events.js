/* The events page: the live feed, newest first, with the type and node filters of the form above
 * it. The socket subscribes with the same filters and resumes after the newest event on the page,
 * so a reconnect fills the gap without repeating an event. */
(function () {
  "use strict";

  const Dash = window.Dash;
  const list = document.getElementById("events");
  const note = document.getElementById("feed-note");
  const KEEP = 500;

  function lastId() {
    let last = 0;
    for (const li of list.children) if (li.dataset.event) last = Math.max(last, Number(li.dataset.event));
    return last;
  }

  function add(events) {
    const before = lastId();
    Dash.prependEvents(list, events, Dash.nodeUrl, KEEP);
    for (const li of list.children) {
      if (Number(li.dataset.event) > before && before) li.classList.add("fresh");
    }
  }

  Dash.connect({
    query: () => ({ after: String(lastId()) }),
    snapshot: (message) => add(message.events || []),
    update: (message) => message.events && add(message.events),
    truncated: (message) => Dash.setText(note, "Catching up: " + message.detail),
  });
})();
