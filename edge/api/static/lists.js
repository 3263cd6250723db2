// The scan-list panel: start and stop a list, watch it fill (counts per card, each entry with
// its thumbnail), fix or delete an entry, download the export.

import { api, request } from "./api.js";
import { openFix } from "./fix.js";
import { clockTime, errorText, esc, metaHtml, notice } from "./ui.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;

let shown = null; // the list on screen (the object GET /v1/lists/{id} returns)
let shownKey = ""; // what was last rendered, so a poll that brings nothing new redraws nothing
let pollTimer = 0;
const thumbs = new Map(); // thumbnail path -> object URL (fetched with the token, kept)

function optionText(l) {
  return `${l.name}${l.recording ? " (recording)" : ""} · ${l.entry_count} card${l.entry_count === 1 ? "" : "s"}`;
}

async function refreshIndex(selectId) {
  const { lists, recording } = await api.lists();
  const select = $("list-select");
  select.innerHTML = '<option value="">— earlier lists —</option>' + lists
    .map((l) => `<option value="${esc(l.list_id)}">${esc(optionText(l))}</option>`)
    .join("");
  $("list-pick").hidden = lists.length === 0;
  const id = selectId ?? shown?.list_id ?? recording;
  if (id !== undefined && id !== null) {
    select.value = String(id);
    await show(id);
  } else {
    render(null);
  }
}

async function show(id) {
  clearTimeout(pollTimer);
  try {
    render(await api.list(id));
  } catch (e) {
    notice(errorText(e), "error");
    render(null);
    return;
  }
  if (shown?.recording) pollTimer = setTimeout(() => show(id), POLL_MS);
}

/** A thumbnail through fetch, so a device that protects reads gets its token (an <img src>
 * cannot send one). */
async function loadThumb(img, url) {
  try {
    if (!thumbs.has(url)) thumbs.set(url, URL.createObjectURL(await (await request("GET", url)).blob()));
    img.src = thumbs.get(url);
  } catch { /* no thumbnail: the entry still reads */ }
}

function renderKey(list) {
  return JSON.stringify([list.recording, list.entry_count, list.cards.map((c) => [c.card_id, c.quantity]),
    list.entries.map((e) => [e.entry_id, e.card_id, e.confidence])]);
}

function render(list) {
  const key = list ? renderKey(list) : "";
  if (list && shown?.list_id === list.list_id && key === shownKey) return;
  shown = list;
  shownKey = key;
  $("list-start").hidden = !!list?.recording;
  $("list-current").hidden = !list;
  if (!list) return;
  $("list-title").textContent = list.name;
  $("list-note").textContent = list.note || "";
  $("list-state").textContent = list.recording ? "● recording" : "stopped";
  $("list-state").className = "pill " + (list.recording ? "rec" : "");
  $("list-stop").hidden = !list.recording;
  const total = list.entry_count;
  $("list-total").textContent = `${total} card${total === 1 ? "" : "s"}, ${list.card_count} different`;

  const latestThumb = new Map(list.entries.filter((e) => e.thumb).map((e) => [e.card_id, e.thumb]));
  $("list-counts").innerHTML = list.cards.length
    ? list.cards.map((c) => `<tr data-card="${esc(c.card_id)}"><td class="thumb-cell"><img class="thumb" alt=""></td>
        <td class="qty">${esc(c.quantity)}×</td><td><div class="name">${esc(c.name || c.card_id)}</div>
        <div class="meta">${metaHtml([c.set_name, c.number, c.card_id])}</div></td></tr>`).join("")
    : `<tr><td class="muted">${list.recording ? "Lay cards under the camera: each one is counted as it is recognised." : "This list is empty."}</td></tr>`;
  for (const row of $("list-counts").querySelectorAll("tr[data-card]")) {
    const url = latestThumb.get(row.dataset.card);
    if (url) loadThumb(row.querySelector("img"), url);
  }
  const option = $("list-select").querySelector(`option[value="${list.list_id}"]`);
  if (option) option.textContent = optionText(list);

  const entries = [...list.entries].reverse(); // newest first
  $("list-entry-count").textContent = String(entries.length);
  const ul = $("list-entries");
  ul.innerHTML = "";
  for (const entry of entries) {
    const li = document.createElement("li");
    li.className = "card";
    li.dataset.tier = entry.confidence;
    li.innerHTML = `<img class="thumb" alt="">
      <div class="text"><div class="name">${esc(entry.name || entry.card_id)}</div>
        <span class="badge">${esc(entry.confidence)}</span>
        <span class="meta">${metaHtml([clockTime(entry.t), entry.card_id])}</span></div>
      <button type="button" class="fix small">Fix</button>
      <button type="button" class="delete small ghost" aria-label="Remove this entry">✕</button>`;
    if (entry.thumb) loadThumb(li.querySelector(".thumb"), entry.thumb);
    li.querySelector(".fix").addEventListener("click", () => fixEntry(list, entry));
    li.querySelector(".delete").addEventListener("click", () => deleteEntry(list, entry));
    ul.append(li);
  }
}

function fixEntry(list, entry) {
  openFix({
    title: "Correct this entry",
    answer: `Recorded as: ${entry.name || entry.card_id} (${entry.confidence})`,
    drawCrop: (canvas) => {
      if (!entry.thumb) return;
      const img = new Image();
      img.onload = () => {
        const h = 168, w = Math.round((h * img.naturalWidth) / img.naturalHeight);
        canvas.width = w;
        canvas.height = h;
        canvas.style.width = w + "px";
        canvas.style.height = h + "px";
        canvas.getContext("2d").drawImage(img, 0, 0, w, h);
      };
      loadThumb(img, entry.thumb);
    },
    query: entry.name || "",
    teachable: true,
    save: async (choice) => {
      await api.fixEntry(list.list_id, entry.entry_id, choice.card_id, choice.teach);
      notice(choice.teach ? "Entry corrected; the device will know this card next time" : "Entry corrected", "ok");
      await show(list.list_id);
    },
  });
}

async function deleteEntry(list, entry) {
  try {
    await api.deleteEntry(list.list_id, entry.entry_id);
    await show(list.list_id);
  } catch (e) {
    notice(errorText(e), "error");
  }
}

async function start(ev) {
  ev.preventDefault();
  try {
    const list = await api.startList($("list-name").value.trim(), $("list-note-input").value.trim());
    $("list-name").value = "";
    $("list-note-input").value = "";
    notice(`Recording “${list.name}”`, "ok");
    await refreshIndex(list.list_id);
  } catch (e) {
    notice(errorText(e), "error");
  }
}

async function stop() {
  if (!shown) return;
  try {
    await api.stopList(shown.list_id);
    await refreshIndex(shown.list_id);
  } catch (e) {
    notice(errorText(e), "error");
  }
}

function filename(response, list, format) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = disposition.match(/filename="?([^";]+)"?/);
  if (named) return named[1];
  const ext = format === "json" ? "json" : "csv";
  return `${list.name.replace(/[^\w.-]+/g, "_") || "list"}-${format}.${ext}`;
}

async function download() {
  if (!shown) return;
  const format = $("export-format").value;
  try {
    const r = await api.exportList(shown.list_id, format);
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = filename(r, shown, format);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    notice(errorText(e), "error");
  }
}

export function initLists() {
  $("list-start").addEventListener("submit", start);
  $("list-stop").addEventListener("click", stop);
  $("list-download").addEventListener("click", download);
  $("list-select").addEventListener("change", (ev) => ev.target.value && refreshIndex(ev.target.value));
  refreshIndex().catch((e) => {
    $("list-unavailable").hidden = false;
    $("list-unavailable").textContent = `Scan lists are not available: ${errorText(e)}`;
  });
}
