// Refreshes the progress of the syncs shown on a page. Without it the page still shows the
// state it was rendered with; a reload shows the current one.
(function () {
  "use strict";
  var items = document.querySelectorAll("[data-sync]");
  if (!items.length) { return; }
  var source = document.body.getAttribute("data-progress-src") || "/account/progress";

  function show(el, s) {
    var state = el.querySelector("[data-state]");
    if (state) {
      state.textContent = s.headline;
      state.className = "badge state-" + s.state;
    }
    var detail = el.querySelector("[data-detail]");
    if (detail) { detail.textContent = s.detail; }
    var bar = el.querySelector("progress");
    if (bar) {
      if (s.percent === null) { bar.removeAttribute("value"); } else { bar.value = s.percent; }
      bar.hidden = s.finished && s.state !== "synced";
    }
    var pct = el.querySelector("[data-percent]");
    if (pct) { pct.textContent = s.percent === null ? "" : s.percent + " %"; }
    el.setAttribute("data-finished", s.finished ? "true" : "false");
  }

  function tick() {
    fetch(source, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body || !body.syncs) { return; }
        var open = false;
        body.syncs.forEach(function (s) {
          var el = document.querySelector('[data-sync="' + CSS.escape(s.target) + '"]');
          if (el) { show(el, s); if (!s.finished) { open = true; } }
        });
        if (open) { setTimeout(tick, 1000); }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  tick();
})();
