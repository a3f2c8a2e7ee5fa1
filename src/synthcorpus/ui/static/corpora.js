// Draws every chart of the page (plotly.min.js from the plotly package, served by the plugin) and, on
// a run page whose generation is going, refreshes the progress from progress.json until it is done.
(function () {
  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      var fig = JSON.parse(el.getAttribute("data-figure"));
      Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, responsive: true, staticPlot: false});
    });
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function text(id, value) { var el = document.getElementById(id); if (el) el.textContent = value; }
  function render(p) {
    var box = document.getElementById("progress");
    box.setAttribute("data-state", p.state);
    text("progress-done", p.done);
    text("progress-planned", p.planned === null ? "?" : p.planned);
    text("progress-tps", p.tokens_per_s === null ? "–" : p.tokens_per_s);
    text("progress-eta", duration(p.eta_s));
    var st = document.getElementById("progress-state"); st.textContent = p.state; st.className = "state " + p.state;
    text("progress-updated", "updated " + new Date(p.at * 1000).toLocaleTimeString());
    document.getElementById("progress-fill").style.width = (p.planned ? (100 * p.done / p.planned).toFixed(1) : 0) + "%";
    var body = document.querySelector("#progress-shards tbody");
    body.innerHTML = "";
    p.shards.forEach(function (s) {
      var tr = document.createElement("tr"); tr.setAttribute("data-shard", s.shard);
      [s.shard, s.state, s.done + " / " + s.planned, s.tokens_per_s === null || s.tokens_per_s === undefined ? "–" : s.tokens_per_s, duration(s.eta_s)]
        .forEach(function (v, i) { var td = document.createElement("td"); td.textContent = v; if (i === 1) td.className = "state " + s.state; if (i > 1) td.className = "n"; tr.appendChild(td); });
      body.appendChild(tr);
    });
  }
  function poll() {
    var box = document.getElementById("progress");
    if (!box || box.getAttribute("data-state") === "done") return;
    fetch(box.getAttribute("data-url"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (p) { render(p); if (p.state !== "done") setTimeout(poll, 2000); })
      .catch(function () { setTimeout(poll, 5000); });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(); setTimeout(poll, 2000); });
})();
