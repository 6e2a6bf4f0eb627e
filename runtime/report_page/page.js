// camrt report page: the gallery (sort, filter, pages) over the rows embedded as JSON. Every value read from the
// run is put into the page as text (textContent), never as markup.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("camrt-data").textContent);
  var methods = DATA.methods, rows = DATA.rows, metrics = DATA.metrics;
  var byKey = {};
  metrics.forEach(function (m) { byKey[m.key] = m; });
  var state = { metric: DATA.default_metric, sort: "index", desc: false, cls: "", status: "", search: "", page: 0 };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    var a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : v.toFixed(3);
  }
  function metricName(m) { return m.name + (m.variant ? " " + m.variant : "") + (m.better === "lower" ? " ↓" : m.better === "higher" ? " ↑" : ""); }
  function methodValue(row, k) {
    var v = row.values[k];
    return v && v[state.metric] !== undefined ? v[state.metric] : null;
  }
  function spread(row) {
    var vals = [];
    for (var k = 0; k < methods.length; k++) { var v = methodValue(row, k); if (v !== null) vals.push(v); }
    return vals.length > 1 ? Math.max.apply(null, vals) - Math.min.apply(null, vals) : null;
  }
  function sortValue(row) {
    var s = state.sort;
    if (s === "index") return row.index;
    if (s === "name") return row.name.toLowerCase();
    if (s === "probability") return row.probability;
    if (s === "spread") return spread(row);
    return methodValue(row, Number(s.slice(1)));
  }
  function visible() {
    var q = state.search.toLowerCase();
    var list = rows.filter(function (r) {
      return (!state.cls || r.cls === state.cls) && (!state.status || r.status === state.status) &&
        (!q || r.name.toLowerCase().indexOf(q) >= 0);
    });
    var keyed = list.map(function (r) { return [sortValue(r), r]; });
    var sign = state.desc ? -1 : 1;
    keyed.sort(function (a, b) {
      var x = a[0], y = b[0];
      if (x === null && y === null) return a[1].index - b[1].index;
      if (x === null) return 1;  // images without a value last, either way
      if (y === null) return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a[1].index - b[1].index;
    });
    return keyed.map(function (p) { return p[1]; });
  }

  function header() {
    var head = $("head");
    head.textContent = "";
    var cols = [["index", "#"], ["name", "image"], ["probability", "class, probability"]];
    methods.forEach(function (m, k) { cols.push(["m" + k, m]); });
    if (methods.length > 1) cols.push(["spread", "spread"]);
    cols.forEach(function (c) {
      var th = el("th", { "data-sort": c[0], title: "sort by " + c[1] }, [c[1]]);
      if (state.sort === c[0]) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
      th.addEventListener("click", function () {
        if (state.sort === c[0]) { state.desc = !state.desc; } else { state.sort = c[0]; state.desc = false; }
        state.page = 0;
        render();
      });
      head.appendChild(th);
    });
  }
  function picture(files, size, row) {
    if (!files) return el("span", { "class": "missing" }, ["missing"]);
    var img = el("img", { src: files[size], alt: row.name });
    img.addEventListener("click", function () { detail(row); });
    return img;
  }
  function values(v) {
    var dl = el("dl", { "class": "vals" });
    metrics.forEach(function (m) {
      if (!(m.shown || m.key === state.metric) || !(m.key in v)) return;
      var cls = m.key === state.metric ? "chosen" : "";
      dl.appendChild(el("dt", { "class": cls, title: metricName(m) }, [m.short + (m.better === "lower" ? " ↓" : m.better === "higher" ? " ↑" : "")]));
      dl.appendChild(el("dd", { "class": cls }, [fmt(v[m.key])]));
    });
    return dl;
  }
  function line(row) {
    var tr = el("tr", { "data-index": String(row.index), "data-status": row.status, "data-class": row.cls,
                        "class": row.status === "ok" ? "" : "error" });
    tr.appendChild(el("td", { "class": "num" }, [String(row.index)]));
    var image = el("td", {}, [picture(row.photo, "thumb", row), el("div", { "class": "name", title: row.path }, [row.name])]);
    if (row.status !== "ok") {
      image.firstChild.textContent = "not explained";
      image.appendChild(el("div", { "class": "err" }, [row.error]));
    }
    tr.appendChild(image);
    var info = [];
    if (row.cls) info.push(el("div", {}, [row.cls]));
    if (row.probability !== null) info.push(el("div", { "class": "small" }, ["p = " + fmt(row.probability)]));
    if (row.predicted && row.predicted !== row.cls) info.push(el("div", { "class": "small" }, ["predicted: " + row.predicted]));
    if (row.label) info.push(el("div", { "class": "small" }, ["label: " + row.label]));
    tr.appendChild(el("td", {}, info));
    methods.forEach(function (m, k) {
      var v = row.values[k];
      var value = methodValue(row, k);
      var td = el("td", { "class": "m", "data-value": value === null ? "" : String(value) });
      if (v) { td.appendChild(picture(row.methods[k], "thumb", row)); td.appendChild(values(v)); }
      tr.appendChild(td);
    });
    if (methods.length > 1) {
      var s = spread(row);
      tr.appendChild(el("td", { "class": "num", "data-value": s === null ? "" : String(s) }, [fmt(s)]));
    }
    return tr;
  }
  function render() {
    header();
    var list = visible();
    var size = DATA.page_size, pages = Math.max(1, Math.ceil(list.length / size));
    state.page = Math.min(state.page, pages - 1);
    var body = $("body");
    body.textContent = "";
    list.slice(state.page * size, (state.page + 1) * size).forEach(function (r) { body.appendChild(line(r)); });
    $("count").textContent = list.length + " of " + rows.length + " images";
    $("page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }
  function detail(row) {
    var box = $("detail-body");
    box.textContent = "";
    box.appendChild(el("h2", {}, [row.name]));
    box.appendChild(el("p", { "class": "small" }, [row.path + (row.cls ? " — " + row.cls + ", p = " + fmt(row.probability) : "")]));
    var tiles = el("div", { "class": "tiles" });
    tiles.appendChild(el("figure", {}, [picture(row.photo, "view", row), el("figcaption", {}, ["photo"])]));
    methods.forEach(function (m, k) {
      if (!row.values[k]) return;
      var all = el("dl", { "class": "vals" });
      metrics.forEach(function (mm) {
        if (!(mm.key in row.values[k])) return;
        all.appendChild(el("dt", {}, [metricName(mm)]));
        all.appendChild(el("dd", {}, [fmt(row.values[k][mm.key])]));
      });
      tiles.appendChild(el("figure", {}, [picture(row.methods[k], "view", row), el("figcaption", {}, [m]), all]));
    });
    box.appendChild(tiles);
    $("detail").hidden = false;
  }

  var select = $("metric");
  metrics.forEach(function (m) {
    var option = el("option", { value: m.key }, [metricName(m)]);
    if (m.key === state.metric) option.selected = true;
    select.appendChild(option);
  });
  select.addEventListener("change", function () { state.metric = select.value; render(); });
  var classes = {};
  rows.forEach(function (r) { if (r.cls) classes[r.cls] = true; });
  Object.keys(classes).sort().forEach(function (c) { $("class").appendChild(el("option", { value: c }, [c])); });
  $("class").addEventListener("change", function () { state.cls = $("class").value; state.page = 0; render(); });
  $("status").addEventListener("change", function () { state.status = $("status").value; state.page = 0; render(); });
  $("search").addEventListener("input", function () { state.search = $("search").value; state.page = 0; render(); });
  $("prev").addEventListener("click", function () { state.page -= 1; render(); });
  $("next").addEventListener("click", function () { state.page += 1; render(); });
  $("close").addEventListener("click", function () { $("detail").hidden = true; });
  $("detail").addEventListener("click", function (e) { if (e.target === $("detail")) $("detail").hidden = true; });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") $("detail").hidden = true; });
  render();
})();
