// pgq web: refresh the parts of a page marked data-refresh="URL" every data-every ms
// (the server renders the fragment; no build step, no library).
(function () {
  document.querySelectorAll("[data-refresh]").forEach(function (part) {
    var every = parseInt(part.getAttribute("data-every") || "3000", 10);
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(part.getAttribute("data-refresh"), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          part.innerHTML = html;
          part.classList.remove("stale");
          part.setAttribute("data-refreshed-at", String(Date.now()));
        })
        .catch(function () {
          // Keep the last view, dimmed, until the server answers again.
          part.classList.add("stale");
          part.setAttribute("data-refresh-error", String(Date.now()));
        })
        .finally(function () { busy = false; });
    }, every);
  });
})();
