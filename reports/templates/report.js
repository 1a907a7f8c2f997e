// Sortable, filterable tables. No network, no libraries: this file is inlined into report.html.
(function () {
  "use strict";
  function key(cell) {
    var v = cell.getAttribute("data-sort");
    if (v === null) { v = cell.textContent.trim(); }
    var n = Number(v);
    return v !== "" && !isNaN(n) ? [0, n] : [1, v.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var keyed = rows.map(function (r, i) { return [key(r.cells[index]), i, r]; });
    keyed.sort(function (x, y) { return (compare(x[0], y[0]) || x[1] - y[1]) * (ascending ? 1 : -1); });
    keyed.forEach(function (k) { body.appendChild(k[2]); });
  }
  function filter(table, text) {
    var needle = text.trim().toLowerCase();
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      var hit = !needle || r.textContent.toLowerCase().indexOf(needle) !== -1;
      r.hidden = !hit;
      if (hit) { shown += 1; }
    });
    var out = document.getElementById(table.id + "-shown");
    if (out) { out.textContent = String(shown); }
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.setAttribute("aria-sort", "none");
      th.setAttribute("title", "Sort by " + th.textContent.trim());
      th.addEventListener("click", function () { sortBy(table, index, th); });
    });
    var box = document.getElementById(table.id + "-filter");
    if (box) { box.addEventListener("input", function () { filter(table, box.value); }); }
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
