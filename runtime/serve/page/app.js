// camrt serve's page: pick or drop an image, explain it through POST /v1/explain, show the overlay, the top
// classes and where the time went. Everything here is served by camrt; nothing is fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let chosen = null;
let methods = {};

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function fillConventions() {
  const method = $("method").value;
  const select = $("convention");
  select.textContent = "";
  for (const name of (methods[method] || {}).conventions || []) {
    select.add(new Option(name, name));
  }
}

async function loadModel() {
  const ready = await fetch("/readyz");
  const info = await ready.json();
  const name = info.model;
  if (!name) {
    setStatus("the server is not ready: " + (info.error || "unknown"), true);
    return;
  }
  const response = await fetch("/v1/models/" + encodeURIComponent(name));
  const model = await response.json();
  methods = model.methods;
  const classes = model.classes.count + " classes";
  $("model").textContent = model.name + " \u00b7 layer " + model.layer + " \u00b7 " + classes +
    (model.random_weights ? " \u00b7 random weights" : "");
  for (const method of Object.keys(methods)) {
    $("method").add(new Option(method, method));
  }
  $("method").value = model.defaults.method;
  fillConventions();
  $("convention").value = model.defaults.convention;
}

function choose(file) {
  if (!file) {
    return;
  }
  chosen = file;
  $("run").disabled = false;
  setStatus(file.name + " (" + Math.round(file.size / 1024) + " kB) ready");
  explain();
}

async function explain() {
  if (!chosen) {
    return;
  }
  const form = new FormData();
  form.append("image", chosen, chosen.name);
  form.append("method", $("method").value);
  form.append("convention", $("convention").value);
  form.append("target", $("target").value.trim() || "predicted");
  form.append("overlay", "1");
  $("run").disabled = true;
  setStatus("explaining " + chosen.name + " \u2026");
  const started = performance.now();
  try {
    const response = await fetch("/v1/explain", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      setStatus(body.error || ("HTTP " + response.status), true);
      return;
    }
    show(body, (performance.now() - started) / 1000);
    setStatus("explained " + chosen.name);
  } catch (err) {
    setStatus("request failed: " + err, true);
  } finally {
    $("run").disabled = false;
  }
}

function show(body, roundTrip) {
  $("overlay").src = "data:image/png;base64," + body.overlay_png_b64;
  $("caption").textContent = body.method + " (" + body.convention + ") explaining " +
    (body.target_name || ("class " + body.target)) + ", p = " + body.probability.toFixed(3);
  const list = $("classes");
  list.textContent = "";
  for (const entry of body.top) {
    const item = document.createElement("li");
    item.className = "class";
    item.textContent = (entry.name || ("class " + entry.class)) + " \u2014 " + (100 * entry.probability).toFixed(1) + " %";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(1, Math.round(120 * entry.probability)) + "px";
    item.appendChild(bar);
    list.appendChild(item);
  }
  const rows = [
    ["queued", body.queued_seconds.toFixed(3) + " s"],
    ["computing", body.compute_seconds.toFixed(3) + " s"],
    ["round trip", roundTrip.toFixed(3) + " s"],
    ["passes run / saved", body.passes_run + " / " + body.passes_saved],
  ];
  const table = $("timing");
  table.textContent = "";
  for (const [key, value] of rows) {
    const row = table.insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = value;
  }
  $("result").hidden = false;
}

$("file").addEventListener("change", (event) => choose(event.target.files[0]));
$("method").addEventListener("change", fillConventions);
$("run").addEventListener("click", explain);
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
loadModel().catch((err) => setStatus("cannot load the model: " + err, true));
