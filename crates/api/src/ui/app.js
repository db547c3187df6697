// Progressive enhancement: the server pushes the overview's fragment over
// Server-Sent Events and this swaps it in; without it the page still reads
// (and refreshes itself through its <noscript> meta refresh).
(function () {
  "use strict";
  var target = document.getElementById("overview");
  var status = document.getElementById("live");
  if (!target || !window.EventSource) { return; }
  var source = new EventSource(target.getAttribute("data-events"));
  source.addEventListener("overview", function (e) {
    // The fragment is server-rendered and escaped; it replaces our own markup only.
    target.innerHTML = e.data;
    if (status) { status.textContent = "live"; }
  });
  source.onerror = function () {
    if (status) { status.textContent = "reconnecting…"; }
  };
})();
