// The report's tables and principal views. No network, no libraries: this file is inlined into report.html.
// Each table's rows are in a JSON script element beside it (column by column; repeated texts stored
// once; big tables gzipped and base64-encoded). One page of rows is in the DOM at a time; search
// and sort work on every row.
(function () {
  "use strict";
  var PAGE = 100;
  var NAME = /(?:user|team|service_account):[^\s,;()[\]]+/g;
  var TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/;
  var tables = {};

  function decode(el) {
    if (el.getAttribute("data-encoding") === "json") { return Promise.resolve(JSON.parse(el.textContent)); }
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot unpack the table (no DecompressionStream)"));
    }
    var bin = atob(el.textContent.trim());
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i += 1) { bytes[i] = bin.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  function column(values, n) {
    if (Array.isArray(values)) { return values; }
    var out = new Array(n);
    for (var i = 0; i < n; i += 1) { var k = values.i[i]; out[i] = k === null ? null : values.d[k]; }
    return out;
  }

  function fill(td, v) {
    if (v === null || v === undefined) { return; }
    if (typeof v === "number") { td.className = "num"; td.textContent = v.toLocaleString("en-US"); return; }
    if (TIME.test(v)) { td.className = "time"; }
    NAME.lastIndex = 0;
    var last = 0;
    var m;
    while ((m = NAME.exec(v)) !== null) {
      if (m.index > last) { td.appendChild(document.createTextNode(v.slice(last, m.index))); }
      var a = document.createElement("a");
      a.href = "#who=" + encodeURIComponent(m[0]);
      a.className = "who";
      a.textContent = m[0];
      td.appendChild(a);
      last = m.index + m[0].length;
    }
    if (last < v.length) { td.appendChild(document.createTextNode(v.slice(last))); }
  }

  function compare(a, b) {
    if (a === b) { return 0; }
    if (a === null || a === undefined) { return 1; }
    if (b === null || b === undefined) { return -1; }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    a = String(a).toLowerCase(); b = String(b).toLowerCase();
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // One table: `el` a <table> with its header; data {columns, rows, attention, cols | values, routine?}.
  function Table(el, data) {
    var self = this;
    this.el = el;
    this.n = data.rows;
    this.total = Number(el.getAttribute("data-total")) || data.rows;  // rows of the audit; the page holds n
    this.columns = data.columns;
    this.attention = data.attention || 0;
    this.cols = data.cols || data.values.map(function (v) { return column(v, data.rows); });
    this.routine = data.routine || null;
    this.all = !this.routine;
    this.needle = "";
    this.sortCol = -1;
    this.ascending = true;
    this.page = 0;
    this.hay = null;
    var base = el.id;
    this.count = document.getElementById(base + "-count");
    this.pager = document.getElementById(base + "-pager");
    this.box = document.getElementById(base + "-filter");
    Array.prototype.forEach.call(el.tHead.rows[0].cells, function (th, index) {
      th.setAttribute("aria-sort", "none");
      th.setAttribute("title", "Sort by " + th.textContent.trim());
      th.addEventListener("click", function () { self.sortBy(index, th); });
    });
    if (this.box) { this.box.addEventListener("input", function () { self.filter(self.box.value); }); }
    var all = document.getElementById(base + "-all");
    if (all) { all.addEventListener("change", function () { self.all = all.checked; self.refresh(); }); }
    this.refresh();
  }

  Table.prototype.index = function (name) { return this.columns.indexOf(name); };

  Table.prototype.text = function (i) {
    if (this.hay === null) { this.hay = new Array(this.n); }
    var h = this.hay[i];
    if (h === undefined) {
      var parts = [];
      for (var c = 0; c < this.cols.length; c += 1) { var v = this.cols[c][i]; if (v !== null) { parts.push(v); } }
      h = this.hay[i] = parts.join("\u0001").toLowerCase();
    }
    return h;
  };

  Table.prototype.isRoutine = function (i) {
    if (this.routineCol === undefined) { this.routineCol = this.cols[this.index(this.routine.column)]; }
    return this.routine.values.indexOf(this.routineCol[i]) !== -1;
  };

  Table.prototype.refresh = function () {
    var view = [];
    var needle = this.needle;
    for (var i = 0; i < this.n; i += 1) {
      if (!this.all && this.isRoutine(i)) { continue; }
      if (needle && this.text(i).indexOf(needle) === -1) { continue; }
      view.push(i);
    }
    if (this.sortCol >= 0) {
      var col = this.cols[this.sortCol];
      var sign = this.ascending ? 1 : -1;
      view.sort(function (x, y) { return compare(col[x], col[y]) * sign || x - y; });
    }
    this.view = view;
    this.page = Math.min(this.page, Math.max(0, Math.ceil(view.length / PAGE) - 1));
    this.render();
  };

  Table.prototype.filter = function (text) { this.needle = text.trim().toLowerCase(); this.page = 0; this.refresh(); };

  Table.prototype.sortBy = function (index, th) {
    this.ascending = !(this.sortCol === index && this.ascending);
    this.sortCol = index;
    Array.prototype.forEach.call(this.el.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", this.ascending ? "ascending" : "descending");
    this.refresh();
  };

  Table.prototype.go = function (page) { this.page = page; this.render(); };

  Table.prototype.render = function () {
    var self = this;
    var body = document.createElement("tbody");
    var first = this.page * PAGE;
    var rows = this.view.slice(first, first + PAGE);
    rows.forEach(function (i) {
      var tr = body.insertRow();
      if (i < self.attention) { tr.className = "attention"; }
      for (var c = 0; c < self.cols.length; c += 1) { fill(tr.insertCell(), self.cols[c][i]); }
    });
    this.el.replaceChild(body, this.el.tBodies[0]);
    var shown = this.view.length;
    var hidden = this.all ? 0 : this.routine.rows;
    if (this.count) {
      this.count.textContent = (shown ? "rows " + (first + 1).toLocaleString("en-US") + "\u2013"
        + (first + rows.length).toLocaleString("en-US") + " of " : "no row of ") + shown.toLocaleString("en-US")
        + (this.needle ? " matching" : "") + (hidden ? " (" + hidden.toLocaleString("en-US") + " routine rows hidden)" : "")
        + (this.total > this.n ? "; " + this.total.toLocaleString("en-US") + " in all, the first "
           + this.n.toLocaleString("en-US") + " in this page" : shown !== this.n ? "; "
           + this.n.toLocaleString("en-US") + " in all" : "");
    }
    if (this.pager) { this.drawPager(); }
  };

  Table.prototype.drawPager = function () {
    var self = this;
    var pages = Math.max(1, Math.ceil(this.view.length / PAGE));
    this.pager.textContent = "";
    if (pages === 1) { return; }
    [["\u00ab first", 0], ["\u2039 previous", this.page - 1], ["next \u203a", this.page + 1],
     ["last \u00bb", pages - 1]].forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b[0];
      button.disabled = b[1] < 0 || b[1] >= pages || b[1] === self.page;
      button.addEventListener("click", function () { self.go(b[1]); });
      self.pager.appendChild(button);
    });
    var where = document.createElement("span");
    where.textContent = "page " + (this.page + 1).toLocaleString("en-US") + " of " + pages.toLocaleString("en-US");
    this.pager.insertBefore(where, this.pager.childNodes[2]);
  };

  // -- one principal: #who=user:NAME -------------------------------------------------------------

  function rowsOf(table, who) {
    var c = table.index("who");
    var out = [];
    if (c < 0) { return out; }
    var col = table.cols[c];
    for (var i = 0; i < table.n; i += 1) { if (col[i] === who) { out.push(i); } }
    return out;
  }

  function subTable(parent, id, source, rows, columns) {
    var keep = columns.filter(function (c) { return source.index(c) >= 0; });
    var frame = document.createElement("div");
    frame.innerHTML = '<div class="tools"><input type="search" placeholder="Search these rows"><span class="count">'
      + '</span></div><div class="tablebox"><table class="sortable"><thead><tr></tr></thead><tbody></tbody></table>'
      + '</div><div class="pager"></div>';
    var table = frame.querySelector("table");
    table.id = id;
    frame.querySelector("input").id = id + "-filter";
    frame.querySelector(".count").id = id + "-count";
    frame.querySelector(".pager").id = id + "-pager";
    keep.forEach(function (c) { var th = document.createElement("th"); th.textContent = c; table.tHead.rows[0].appendChild(th); });
    parent.appendChild(frame);
    var attention = rows.filter(function (i) { return i < source.attention; }).length;
    return new Table(table, {
      columns: keep, rows: rows.length, attention: attention,
      cols: keep.map(function (c) { var col = source.cols[source.index(c)]; return rows.map(function (i) { return col[i]; }); })
    });
  }

  function add(parent, tag, text) {
    var el = document.createElement(tag);
    if (text !== undefined) { el.textContent = text; }
    parent.appendChild(el);
    return el;
  }

  function showPrincipal(who) {
    var section = document.getElementById("principal");
    section.textContent = "";
    section.hidden = false;
    add(section, "h2", who).className = "principal-name";
    var back = add(section, "p");
    back.className = "sub";
    back.innerHTML = '<a href="#principals">All people and accounts</a>';
    var review = tables["t-review"];
    var held = review ? rowsOf(review, who) : [];
    var places = {};
    var lastUse = null;
    held.forEach(function (i) {
      var where = review.cols[review.index("where")][i];
      var used = review.cols[review.index("last_used")][i];
      if (where) { places[where] = true; }
      if (used && (lastUse === null || used > lastUse)) { lastUse = used; }
    });
    var findings = tables.attention ? rowsOf(tables.attention, who) : [];
    add(section, "p", who + " holds " + held.length.toLocaleString("en-US") + " permission" + (held.length === 1 ? "" : "s")
      + (held.length ? " in " + Object.keys(places).sort().join(", ") : "") + " at the end of the period; last use: "
      + (lastUse || "none recorded") + "; " + findings.length + " finding" + (findings.length === 1 ? "" : "s")
      + " to act on.").className = "summary";
    var cut = Object.keys(tables).filter(function (id) { return tables[id].total > tables[id].n; });
    if (cut.length) {
      add(section, "p", "Some tables of this page hold only their first rows (" + cut.map(function (id) {
        return id.replace(/^t-/, "") + ": " + tables[id].n.toLocaleString("en-US") + " of "
          + tables[id].total.toLocaleString("en-US");
      }).join("; ") + "), so " + who + " may have more rows than shown here: every row is in audits/NAME.csv.")
        .className = "limit";
    }
    add(section, "h3", "Findings to act on");
    if (findings.length) {
      subTable(section, "p-findings", tables.attention, findings, ["audit", "finding", "where", "what", "since", "detail",
                                                                  "positions"]);
    } else { add(section, "p", "None."); }
    add(section, "h3", "What they hold, and where from");
    if (held.length) {
      subTable(section, "p-holds", review, held, ["what", "where", "role", "via_team", "from_role", "resource_scope",
                                                  "since", "expires_at", "granted_by", "grant_reason", "last_used", "uses"]);
    } else { add(section, "p", "Nothing, in the access review at the end of the period."); }
    add(section, "h3", "In every audit");
    var list = add(section, "ul");
    Object.keys(tables).forEach(function (id) {
      if (id.indexOf("t-") !== 0) { return; }
      var n = rowsOf(tables[id], who).length;
      var li = add(list, "li");
      var title = document.getElementById(id.slice(2));
      var name = title ? title.textContent : id.slice(2);
      if (!n) { li.textContent = name + ": no row"; return; }
      var a = add(li, "a", name + ": " + n.toLocaleString("en-US") + " row" + (n === 1 ? "" : "s"));
      a.href = "#" + id.slice(2);
      a.addEventListener("click", function () {
        var t = tables[id];
        if (t.routine && !t.all) { var box = document.getElementById(id + "-all"); box.checked = true; t.all = true; }
        t.box.value = who;
        t.filter(who);
      });
    });
    section.scrollIntoView();
  }

  function route() {
    var hash = location.hash;
    var section = document.getElementById("principal");
    if (hash.indexOf("#who=") === 0) { showPrincipal(decodeURIComponent(hash.slice(5))); } else { section.hidden = true; }
  }

  var loads = Array.prototype.map.call(document.querySelectorAll("table.sortable"), function (el) {
    var source = document.getElementById(el.id + "-data");
    return decode(source).then(function (data) { tables[el.id] = new Table(el, data); }, function (err) {
      var note = document.createElement("p");
      note.className = "limit";
      note.textContent = err.message + "; every row is in the CSV file named above.";
      el.parentNode.parentNode.insertBefore(note, el.parentNode);
    });
  });
  Promise.all(loads).then(function () {
    window.addEventListener("hashchange", route);
    route();
    window.accessReport = {tables: tables};
    document.documentElement.setAttribute("data-ready", "1");
  });
})();
