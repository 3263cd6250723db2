// cardedge web page: live preview with card polygons, the current scene, events, upload-to-identify.
// Self-contained: no libraries, no CDN. Talks only to this device's API.
"use strict";

const $ = (id) => document.getElementById(id);
const OK = "#28c850", WARN = "#f0aa14";

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function label(card) {
  if (card.name) return card.name;
  return card.identified ? "unknown card" : "identifying…";
}

function drawPolygons(canvas, width, height, cards, scaleTo) {
  const box = scaleTo.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(box.width));
  canvas.height = Math.max(1, Math.round(box.height));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!width || !height) return;
  const sx = canvas.width / width, sy = canvas.height / height;
  ctx.lineWidth = 3;
  ctx.font = "bold 15px system-ui, sans-serif";
  for (const card of cards) {
    const colour = card.known ? OK : WARN;
    ctx.strokeStyle = colour;
    ctx.beginPath();
    card.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
    ctx.closePath();
    ctx.stroke();
    const xs = card.polygon.map((p) => p[0] * sx), ys = card.polygon.map((p) => p[1] * sy);
    const text = label(card), tx = Math.min(...xs), ty = Math.max(16, Math.min(...ys) - 6);
    ctx.fillStyle = "rgba(0,0,0,.65)";
    ctx.fillRect(tx - 2, ty - 15, ctx.measureText(text).width + 6, 19);
    ctx.fillStyle = colour;
    ctx.fillText(text, tx + 1, ty);
  }
}

function renderList(ul, cards) {
  if (!cards.length) {
    ul.innerHTML = '<li class="muted">no cards in view</li>';
    return;
  }
  ul.innerHTML = cards.map((c) => {
    const meta = [c.set_name, c.number, c.card_id, c.score != null ? "score " + Number(c.score).toFixed(2) : ""]
      .filter(Boolean).map(esc).join(" · ");
    return `<li class="${c.known ? "known" : ""}"><div class="name">${esc(label(c))}</div><div class="meta">${meta}</div></li>`;
  }).join("");
}

let lastFrame = null;
async function pollScene() {
  try {
    const r = await fetch("/v1/scene", { cache: "no-store" });
    if (r.ok) {
      const scene = await r.json();
      $("bundle").textContent = "bundle: " + (scene.bundle_id ?? "none");
      drawPolygons($("overlay"), scene.width, scene.height, scene.cards, $("stream"));
      if (scene.frame_id !== lastFrame) renderList($("scene"), scene.cards);
      lastFrame = scene.frame_id;
    }
  } catch (e) { /* the device may be restarting; try again next tick */ }
  setTimeout(pollScene, 250);
}

async function pollStatus() {
  try {
    const r = await fetch("/v1/status", { cache: "no-store" });
    if (r.ok) {
      const s = await r.json();
      $("ready").textContent = s.ready ? "ready" : "not ready";
      $("ready").className = "pill " + (s.ready ? "ok" : "bad");
      $("fps").textContent = "fps: " + (s.camera ? s.camera.fps.toFixed(1) : "–");
      $("camera").textContent = s.camera ? `${s.camera.uri} — ${s.camera.reason}` : "no live camera configured";
    }
  } catch (e) { /* retry */ }
  setTimeout(pollStatus, 2000);
}

function listenEvents() {
  if (!window.EventSource) return;
  const es = new EventSource("/v1/events");
  const add = (ev) => {
    const d = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.textContent = `${ev.type.replace("card_", "")}: ${d.name ?? d.card_id ?? "track " + d.track_id}`;
    const ol = $("events");
    ol.prepend(li);
    while (ol.children.length > 50) ol.lastChild.remove();
  };
  ["card_appeared", "card_identified", "card_left"].forEach((t) => es.addEventListener(t, add));
}

async function identify(ev) {
  ev.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const out = $("upload-result");
  out.innerHTML = '<li class="muted">identifying…</li>';
  const body = new FormData();
  body.append("file", file);
  const r = await fetch("/v1/identify", { method: "POST", body });
  const data = await r.json();
  if (!r.ok) {
    out.innerHTML = `<li>${esc(data.code)}: ${esc(data.message)}</li>`;
    return;
  }
  const img = new Image();
  img.onload = () => {
    const c = $("upload-canvas");
    const scale = Math.min(1, 640 / img.width);
    c.width = img.width * scale; c.height = img.height * scale;
    c.style.width = c.width + "px"; c.style.height = c.height + "px";
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0, c.width, c.height);
    const overlay = document.createElement("canvas");
    drawPolygons(overlay, data.width, data.height, data.cards.map((k) => ({ ...k, identified: true })), c);
    ctx.drawImage(overlay, 0, 0);
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(file);
  renderList(out, data.cards.map((k) => ({ ...k, identified: true })));
}

$("identify-form").addEventListener("submit", identify);
pollScene();
pollStatus();
listenEvents();
