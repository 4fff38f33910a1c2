// sipflow report: call list (filter, sort, pages) and lazy per-call ladders.
// Inlined by sipflow/report/html.py; reads the JSON in #sf-data; no network access.
function sipflowLoad() {
  "use strict";
  var el = document.getElementById("sf-data");
  if (el.dataset.encoding !== "gzip+base64") {
    return Promise.resolve(JSON.parse(el.textContent));
  }
  var bin = atob(el.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text().then(JSON.parse);
}

sipflowLoad().then(function (data) {
  "use strict";
  var calls = data.calls, ladders = data.ladders, PAGE = data.page_size || 100;
  var state = {rows: calls.slice(), page: 0, key: "i", dir: 1, sel: -1};
  var $ = function (id) { return document.getElementById(id); };

  function text(v) { return v === null || v === undefined ? "" : String(v); }

  function matches(c, q, outcome, code) {
    if (outcome && c.outcome !== outcome) return false;
    if (code && text(c.code).indexOf(code) !== 0) return false;
    if (!q) return true;
    return (c.cid + " " + text(c.from) + " " + text(c.to) + " " + text(c.ruri)).toLowerCase()
      .indexOf(q) >= 0;
  }

  function applyFilter() {
    var q = $("f-text").value.trim().toLowerCase(), o = $("f-outcome").value,
        k = $("f-code").value.trim();
    state.rows = calls.filter(function (c) { return matches(c, q, o, k); });
    sortRows();
    state.page = 0;
    drawTable();
  }

  function sortRows() {
    var k = state.key, d = state.dir;
    state.rows.sort(function (a, b) {
      var x = a[k], y = b[k];
      if (x === y) return a.i - b.i;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * d;
    });
  }

  var COLS = ["i", "start", "from", "to", "outcome", "code", "setup", "pdd", "dur", "msgs", "rtx",
              "findings", "media", "cid"];

  function cell(c, k) {
    var td = document.createElement("td");
    td.textContent = text(c[k]);
    if (k === "outcome") td.className = "o-" + c.outcome;
    if (k === "cid") { td.className = "cid"; td.title = c.cid; }
    return td;
  }

  function drawTable() {
    var body = $("calls").tBodies[0], start = state.page * PAGE;
    var page = state.rows.slice(start, start + PAGE);
    var frag = document.createDocumentFragment();
    page.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.className = "call" + (c.i === state.sel ? " sel" : "");
      tr.dataset.i = c.i;
      COLS.forEach(function (k) { tr.appendChild(cell(c, k)); });
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    var pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
    $("shown").textContent = state.rows.length + " of " + calls.length + " calls";
    $("page").textContent = "page " + (state.page + 1) + " / " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function showCall(i) {
    state.sel = i;
    var c = calls[i], l = ladders[i];
    Array.prototype.forEach.call(document.querySelectorAll("tr.call"), function (tr) {
      tr.classList.toggle("sel", Number(tr.dataset.i) === i);
    });
    $("detail-title").textContent = "Call " + i + ": " + text(c.from) + " \u2192 " + text(c.to) +
      " (" + c.outcome + (c.code ? " " + c.code : "") + ")";
    $("info").textContent = l.info;
    $("ladder").innerHTML = l.svg;
    $("msg").textContent = "Click an arrow to see the message.";
    $("ladder").dataset.call = i;
  }

  function line(cls, s) {
    var span = document.createElement("span");
    span.className = cls;
    span.textContent = s;
    return span;
  }

  function showMessage(ci, ai) {
    var l = ladders[ci], raw = l.msgs[ai] || "", pre = $("msg");
    pre.replaceChildren();
    (l.badges[ai] || []).forEach(function (b) {
      pre.appendChild(line("bad sev-" + b[0], "\u26A0 " + b[1] + ": " + b[2]));
    });
    var cut = raw.search(/\r?\n\r?\n/), head = cut < 0 ? raw : raw.slice(0, cut),
        body = cut < 0 ? "" : raw.slice(cut);
    head.split(/\r?\n/).forEach(function (h, n) {
      if (n === 0) { pre.appendChild(line("sl", h)); }
      else {
        var colon = h.indexOf(":");
        pre.appendChild(document.createTextNode("\n"));
        if (colon > 0 && !/^\s/.test(h)) {
          pre.appendChild(line("hn", h.slice(0, colon)));
          pre.appendChild(document.createTextNode(h.slice(colon)));
        } else { pre.appendChild(document.createTextNode(h)); }
      }
    });
    if (body) pre.appendChild(line("body", body));
    Array.prototype.forEach.call(document.querySelectorAll("#ladder g.arrow"), function (g) {
      g.classList.toggle("sel", Number(g.dataset.i) === ai);
    });
  }

  $("calls").tHead.addEventListener("click", function (e) {
    var th = e.target.closest("th");
    if (!th) return;
    var k = th.dataset.k;
    state.dir = state.key === k ? -state.dir : 1;
    state.key = k;
    Array.prototype.forEach.call(this.querySelectorAll("th"), function (h) {
      h.className = h.dataset.k === k ? (state.dir > 0 ? "asc" : "desc") : "";
    });
    sortRows();
    drawTable();
  });
  $("calls").tBodies[0].addEventListener("click", function (e) {
    var tr = e.target.closest("tr.call");
    if (tr) showCall(Number(tr.dataset.i));
  });
  $("ladder").addEventListener("click", function (e) {
    var g = e.target.closest("g.arrow");
    if (g) showMessage(Number(this.dataset.call), Number(g.dataset.i));
  });
  ["f-text", "f-code"].forEach(function (id) { $(id).addEventListener("input", applyFilter); });
  $("f-outcome").addEventListener("change", applyFilter);
  $("prev").addEventListener("click", function () { state.page--; drawTable(); });
  $("next").addEventListener("click", function () { state.page++; drawTable(); });

  drawTable();
  if (calls.length) showCall(0);
  document.body.dataset.readyMs = performance.now().toFixed(1);
  document.body.dataset.ready = "1";
}).catch(function (err) {
  document.getElementById("shown").textContent = "could not read the report data: " + err;
  document.body.dataset.ready = "error";
});
