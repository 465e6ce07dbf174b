// xlir's page: search in any language, browse thumbnails, more like this, tags, indexing.
// Plain JavaScript on the server's JSON API; nothing is loaded from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);
const LANGS = ["en", "de", "fr", "es", "it", "ja", "ko", "pl", "ru", "tr", "zh"];
const state = { hits: [], current: null, job: null, events: null, roots: [], photos: null };

// -- talking to the server ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, code) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { accept: "application/json", ...(options.headers || {}) } });
  } catch (err) {
    throw new ApiError("The server is not answering. Is `xlir serve` still running?", 0, "offline");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new ApiError((body && body.error) || `The server answered HTTP ${response.status}.`, response.status,
                       body && body.code);
  }
  return body;
}

function filters() {
  const params = new URLSearchParams();
  const folder = $("in").value, tag = $("tag").value.trim(), after = $("after").value, before = $("before").value;
  if (folder) params.append("in", folder);
  if (tag) params.append("tag", tag);
  if (after) params.set("after", after);
  if (before) params.set("before", nextDay(before)); // "until" includes its day; the API's before does not
  params.set("top_k", $("top_k").value);
  const count = [folder, tag, after, before].filter(Boolean).length;
  $("filter-count").hidden = count === 0;
  $("filter-count").textContent = String(count);
  return params;
}

function nextDay(isoDate) {
  const d = new Date(isoDate + "T00:00:00");
  d.setDate(d.getDate() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// -- what the page shows -----------------------------------------------------------------------

function notice(html, kind = "info") {
  const box = $("notice");
  box.hidden = !html;
  box.className = "notice" + (kind === "error" ? " error" : "");
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.innerHTML = html || "";
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function shortPath(path) { // the folder and the file: enough to tell photos apart on a tile
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : String(path);
}

function basename(path) {
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1] || path;
}

function showError(err) {
  if (err.code === "empty_index") {
    showEmptyIndex();
  } else {
    notice(escapeHtml(err.message), "error");
  }
}

function showEmptyIndex() {
  notice("Nothing is indexed yet. Index a folder below, or run <code>xlir index PATH</code>; "
         + "you can search while it runs.");
}

function render(hits, title) {
  state.hits = hits;
  const grid = $("grid");
  grid.replaceChildren();
  $("results-title").hidden = !title;
  $("results-title").textContent = title || "";
  grid.setAttribute("aria-busy", "false");
  for (const hit of hits) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.id = hit.id;
    button.dataset.path = hit.path;
    const name = basename(hit.path);
    button.title = `${hit.path}\nscore ${hit.score.toFixed(3)}${hit.date ? "\n" + hit.date.slice(0, 10) : ""}`;
    button.setAttribute("aria-label", `${name}, score ${hit.score.toFixed(2)}: show photos like it`);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = name;
    img.src = `/api/thumb/${encodeURIComponent(hit.id)}?size=256`;
    img.addEventListener("error", () => button.classList.add("broken"));
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.innerHTML = `<span class="score">${hit.score.toFixed(3)}</span><span class="where">${escapeHtml(shortPath(hit.path))}</span>`;
    button.append(img, meta);
    button.addEventListener("click", () => openPhoto(hit));
    li.append(button);
    grid.append(li);
  }
}

function busy(text) {
  $("grid").setAttribute("aria-busy", "true");
  notice(escapeHtml(text));
}

// -- searching ---------------------------------------------------------------------------------

async function searchText(query, { push = true } = {}) {
  const params = filters();
  if (!query && !$("tag").value.trim()) {
    notice("Type what to look for, in any language — or drop an image on the page.");
    return;
  }
  params.set("q", query);
  if (push) remember({ q: query });
  closeDetail();
  busy(`Searching for “${query || $("tag").value}”…`);
  try {
    const result = await api(`/api/search?${params}`);
    if (result.lang && result.lang !== "en") document.documentElement.dataset.queryLang = result.lang;
    const none = result.calibrated
      ? `No photo is a good match for “${escapeHtml(query)}”${filtersNote()} (none scores ${result.min_score} or more). `
      : `No photos match “${escapeHtml(query)}”${filtersNote()}. `;
    notice(result.hits.length ? "" : none + "Try other words, another language, or fewer filters.");
    render(result.hits, result.hits.length ? `${result.hits.length} photos for “${query || $("tag").value}”` : "");
  } catch (err) {
    render([], "");
    showError(err);
  }
}

function filtersNote() {
  return $("filter-count").hidden ? "" : " with these filters";
}

async function searchImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    notice(`${escapeHtml(file.name)} is not an image.`, "error");
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  for (const [key, value] of filters()) form.append(key, value);
  const query = $("q").value.trim();
  if (query) form.append("q", query);
  closeDetail();
  busy(`Looking for photos like ${file.name}…`);
  try {
    const result = await api("/api/search", { method: "POST", body: form });
    notice(result.hits.length ? "" : `No photos look like ${escapeHtml(file.name)}${filtersNote()}.`);
    render(result.hits, result.hits.length ? `Photos like ${file.name}` : "");
  } catch (err) {
    render([], "");
    showError(err);
  }
}

async function openPhoto(hit, { push = true } = {}) {
  state.current = hit;
  if (push) remember({ similar: hit.id });
  const detail = $("detail");
  detail.hidden = false;
  $("detail-name").textContent = basename(hit.path);
  $("detail-path").textContent = hit.path;
  const size = hit.width && hit.height ? `${hit.width}×${hit.height} · ` : "";
  $("detail-meta").textContent = `${size}${(hit.date || "").slice(0, 10)}${hit.taken_at ? " (taken)" : ""}`;
  $("detail-img").src = `/api/thumb/${encodeURIComponent(hit.id)}?size=1024`;
  $("detail-img").alt = basename(hit.path);
  $("detail-open").href = `/api/image/${encodeURIComponent(hit.id)}`;
  loadTags(hit);
  busy(`Finding photos like ${basename(hit.path)}…`);
  try {
    const result = await api(`/api/similar/${encodeURIComponent(hit.id)}?${filters()}`);
    if (state.current !== hit) return;
    notice(result.hits.length ? "" : "No other photos to compare with yet.");
    render(result.hits, result.hits.length ? `More like ${basename(hit.path)}` : "");
    detail.scrollIntoView({ block: "nearest" });
  } catch (err) {
    showError(err);
  }
}

async function loadTags(hit) {
  const chips = $("chips");
  chips.replaceChildren();
  chips.setAttribute("aria-busy", "true");
  const lang = $("lang").value;
  try {
    const result = await api(`/api/tags/${encodeURIComponent(hit.id)}?lang=${encodeURIComponent(lang)}`);
    if (state.current !== hit || $("lang").value !== lang) return;
    if (hit.path === hit.id) { // opened from an address: the photo's path comes with its tags
      hit.path = result.path;
      $("detail-name").textContent = basename(result.path);
      $("detail-path").textContent = result.path;
    }
    for (const tag of result.tags) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.lang = lang;
      button.title = `Only photos tagged “${tag.name}”`;
      button.innerHTML = `${escapeHtml(tag.name)}<span class="score">${tag.score.toFixed(2)}</span>`;
      button.addEventListener("click", () => { $("tag").value = tag.name; $("filters").open = true; searchText($("q").value.trim()); });
      li.append(button);
      chips.append(li);
    }
    if (!result.tags.length) chips.innerHTML = "<li>No tag is sure enough for this photo.</li>";
  } catch (err) {
    chips.innerHTML = `<li>${escapeHtml(err.message)}</li>`;
  } finally {
    chips.setAttribute("aria-busy", "false");
  }
}

function closeDetail() {
  state.current = null;
  $("detail").hidden = true;
}

// -- history: back and forward, and links that can be shared ------------------------------------

function remember(params) {
  const url = new URL(location.href);
  url.search = new URLSearchParams(params).toString();
  history.pushState(params, "", url);
}

function restore() {
  const params = new URLSearchParams(location.search);
  if (params.get("similar")) {
    const id = params.get("similar");
    const known = state.hits.find((h) => h.id === id);
    openPhoto(known || { id, path: id, score: 1, date: "" }, { push: false });
  } else if (params.get("q")) {
    $("q").value = params.get("q");
    searchText(params.get("q"), { push: false });
  }
}

// -- indexing ------------------------------------------------------------------------------------

async function startIndex(paths) {
  try {
    const job = await api("/api/index", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ paths }),
    });
    follow(job);
  } catch (err) {
    showJobText(err.message, true);
  }
}

function follow(job) {
  state.job = job;
  if (state.events) state.events.close();
  showJob(job);
  const events = new EventSource(`/api/jobs/${encodeURIComponent(job.id)}/events`);
  state.events = events;
  events.addEventListener("status", (e) => showJob(JSON.parse(e.data)));
  events.addEventListener("end", (e) => {
    events.close();
    state.events = null;
    showJob(JSON.parse(e.data));
    loadStatus();
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) showJobText("Lost the connection to the server.", true);
  };
}

function showJob(job) {
  state.job = job;
  $("job").hidden = false;
  const bar = $("job-bar");
  bar.max = Math.max(job.found, 1);
  if (job.found) bar.value = job.done; else bar.removeAttribute("value");
  let text;
  if (job.state === "running") {
    text = `${job.stage[0].toUpperCase()}${job.stage.slice(1)}: ${job.done} of ${job.found} new or changed photos`
           + (job.skipped ? `, ${job.skipped} skipped` : "") + ". Search away meanwhile.";
  } else if (job.state === "done" && job.report) {
    const r = job.report;
    bar.max = 1; bar.value = 1;
    text = `Indexed ${r.scanned} files in ${r.seconds.toFixed(1)} s: ${r.added} new, ${r.updated} changed, `
           + `${r.reused} reused, ${r.unchanged} unchanged, ${r.removed} removed, ${r.skipped} skipped.`;
  } else {
    text = job.error || `The index job ${job.state}.`;
  }
  showJobText(text, job.state === "failed");
  $("job-stop").hidden = job.state !== "running";
  const skips = $("job-skips");
  skips.replaceChildren();
  for (const skip of job.skips || []) {
    const li = document.createElement("li");
    li.textContent = `${skip.path}: ${skip.reason}`;
    skips.append(li);
  }
}

function showJobText(text, isError) {
  $("job").hidden = false;
  $("job-text").textContent = text;
  $("job-text").className = isError ? "error" : "";
}

// -- the server's state ------------------------------------------------------------------------

async function loadStatus() {
  let status;
  try {
    status = await api("/api/status");
  } catch (err) {
    showError(err);
    return;
  }
  state.roots = status.roots || [];
  state.photos = status.photos;
  const select = $("in");
  const chosen = select.value;
  select.replaceChildren(new Option("All indexed folders", ""));
  for (const root of state.roots) select.append(new Option(root, root));
  select.value = state.roots.includes(chosen) ? chosen : "";
  $("reindex").hidden = state.roots.length === 0;
  const count = status.photos == null ? "no index yet" : `${status.photos} photos`;
  $("footer").textContent = `${count} · model ${status.model} on ${status.device} ${status.precision} · `
                            + `${status.store} (collection ${status.collection}) · xlir ${status.version}`;
  if (!status.photos && !state.hits.length && !(status.job)) showEmptyIndex();
  if (status.job && (!state.job || state.job.id !== status.job.id || !state.events)) follow(status.job);
}

// -- keyboard, drag and drop, paste --------------------------------------------------------------

function moveFocus(event) {
  const buttons = [...document.querySelectorAll("#grid .hit")];
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const columns = Math.max(1, Math.round($("grid").clientWidth / buttons[0].getBoundingClientRect().width));
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns, Home: -at, End: buttons.length }[event.key];
  if (step === undefined) return;
  const next = buttons[Math.min(buttons.length - 1, Math.max(0, at + step))];
  event.preventDefault();
  next.focus();
}

function setUp() {
  const saved = localStorage.getItem("xlir.lang");
  const browser = (navigator.language || "en").slice(0, 2);
  $("lang").value = LANGS.includes(saved) ? saved : (LANGS.includes(browser) ? browser : "en");
  $("lang").addEventListener("change", () => {
    localStorage.setItem("xlir.lang", $("lang").value);
    if (state.current) loadTags(state.current);
  });
  $("search").addEventListener("submit", (e) => { e.preventDefault(); searchText($("q").value.trim()); });
  $("pick").addEventListener("change", (e) => { searchImage(e.target.files[0]); e.target.value = ""; });
  $("detail-close").addEventListener("click", () => { closeDetail(); $("q").focus(); });
  $("clear-filters").addEventListener("click", () => {
    for (const id of ["in", "tag", "after", "before"]) $(id).value = "";
    filters();
  });
  for (const id of ["in", "after", "before", "top_k"]) {
    $(id).addEventListener("change", () => {
      if (state.current) openPhoto(state.current, { push: false });
      else if ($("q").value.trim() || $("tag").value.trim()) searchText($("q").value.trim(), { push: false });
      else filters();
    });
  }
  $("index-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const path = $("index-path").value.trim();
    if (path) startIndex([path]); else showJobText("Type the folder to index, as the server sees it.", true);
  });
  $("reindex").addEventListener("click", () => startIndex(state.roots));
  $("job-stop").addEventListener("click", async () => {
    if (state.job) {
      try { await api(`/api/jobs/${encodeURIComponent(state.job.id)}`, { method: "DELETE" }); }
      catch (err) { showJobText(err.message, true); }
    }
  });
  $("grid").addEventListener("keydown", moveFocus);
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("q").focus(); $("q").select(); }
    if (e.key === "Escape" && !$("detail").hidden) closeDetail();
  });
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer ? e.dataTransfer.types : [])].includes("Files");
  window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; $("drop").hidden = false; } });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    searchImage(e.dataTransfer.files[0]);
  });
  window.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) searchImage(file);
  });
  window.addEventListener("popstate", restore);
  filters();
  loadStatus();
  restore();
  $("q").focus();
}

document.addEventListener("DOMContentLoaded", setUp);
