// cardedge web page: the live preview with the page's own overlays, the cards in view, scan
// lists, corrections, upload-to-identify and the token of a protected device.
// Self-contained: plain ES modules, no libraries, no CDN. Talks only to this device's API.

import { api, setAuthErrorHandler, token } from "./api.js";
import { cardLabel, drawCrop, drawScene, hitCard, insideImage, tierOf, TIERS } from "./draw.js";
import { initFix, openFix } from "./fix.js";
import { initLists } from "./lists.js";
import { errorText, esc, metaHtml, notice } from "./ui.js";

const $ = (id) => document.getElementById(id);
const PREVIEW_INTERVAL_MS = 125; // at most 8 preview frames a second
const RETRY_MS = 1000;
const STATUS_MS = 3000;

// What the preview shows: one frame and the scene of that same frame (/v1/snapshot pairs them),
// so a polygon is never drawn on another frame's picture. Exposed for tests and the console.
const live = { frameId: null, scene: null, image: null, jpeg: null, drawn: null, paused: false };
window.cardedge = live;

// -- token ---------------------------------------------------------------------------------

function showTokenPanel(open, message = "") {
  $("token-panel").hidden = !open;
  $("token-message").textContent = message;
  if (open) $("token-input").focus();
}

function initToken() {
  $("token-input").value = token.get();
  $("token-button").addEventListener("click", () => showTokenPanel($("token-panel").hidden));
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token.set($("token-input").value.trim());
    showTokenPanel(false);
    notice(token.get() ? "Token saved in this browser" : "Token removed");
    refreshTokenState();
  });
  $("token-clear").addEventListener("click", () => {
    token.set("");
    $("token-input").value = "";
    showTokenPanel(false);
    refreshTokenState();
  });
  setAuthErrorHandler((e) => {
    const text = e.status === 401
      ? "This device needs its API token for that. Paste it here (it stays in this browser)."
      : errorText(e);
    showTokenPanel(true, text);
  });
  refreshTokenState();
}

function refreshTokenState() {
  $("token-button").textContent = token.get() ? "Token ✓" : "Token";
}

// -- live preview --------------------------------------------------------------------------

function decodeJpeg(base64) {
  const image = new Image();
  image.src = "data:image/jpeg;base64," + base64;
  return image.decode().then(() => image);
}

function redraw() {
  if (!live.image || !live.scene) return;
  const { width, height, cards } = live.scene;
  live.drawn = { frame_id: live.frameId, ...drawScene($("overlay"), live.image, width, height, cards) };
  $("preview").classList.add("has-frame");
}

/** No new frame: say why, over the last picture if there is one (it is no longer live). */
function showNoFrame(text) {
  $("preview-empty").textContent = text;
  $("preview").classList.toggle("has-frame", !!live.image);
  $("preview").classList.add("stale");
}

async function previewLoop() {
  for (;;) {
    const started = performance.now();
    if (!live.paused && !document.hidden) {
      try {
        const snap = await api.snapshot();
        if (snap.frame_id !== live.frameId) {
          const image = await decodeJpeg(snap.jpeg);
          if (!live.paused) {
            Object.assign(live, { frameId: snap.frame_id, scene: snap.scene, image, jpeg: snap.jpeg });
            redraw();
            renderInView();
            $("preview").classList.remove("stale");
          }
        }
      } catch (e) {
        showNoFrame(e.code === "no_frame" ? "Waiting for the camera…" : `No preview: ${errorText(e)}`);
        await sleep(RETRY_MS);
      }
    }
    await sleep(Math.max(0, PREVIEW_INTERVAL_MS - (performance.now() - started)));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setPaused(paused) {
  live.paused = paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(paused));
  $("preview").classList.toggle("paused", paused);
}

function legend() {
  $("legend").innerHTML = Object.entries(TIERS)
    .map(([key, t]) => `<li class="tier-${key}"><span class="swatch"></span>${esc(t.text)}</li>`)
    .join("");
}

// -- cards in view -------------------------------------------------------------------------

const inView = new Map(); // track_id -> { li, key }

function cardMeta(card) {
  return [card.set_name, card.number, card.card_id];
}

function renderInView() {
  const cards = live.scene?.cards ?? [];
  const list = $("scene");
  $("inview-count").textContent = String(cards.length);
  $("inview-count").hidden = !cards.length;
  $("scene-empty").hidden = cards.length > 0;
  const seen = new Set();
  for (const card of cards) {
    seen.add(card.track_id);
    const tier = tierOf(card);
    const key = `${tier}|${card.card_id}|${card.name}`;
    let item = inView.get(card.track_id);
    if (!item) {
      const li = document.createElement("li");
      li.className = "card";
      li.innerHTML = `<canvas class="thumb" width="46" height="64"></canvas>
        <div class="text"><div class="name"></div><span class="badge"></span> <span class="meta"></span></div>
        <button type="button" class="fix small">Fix</button>`;
      li.querySelector(".fix").addEventListener("click", () => fixInView(card.track_id));
      item = { li, key: null };
      inView.set(card.track_id, item);
    }
    list.append(item.li); // keeps the scene's order
    if (item.key !== key) {
      item.key = key;
      item.li.dataset.tier = tier;
      item.li.querySelector(".name").textContent = cardLabel(card);
      item.li.querySelector(".meta").innerHTML = tier === "unknown" ? "not in the catalogue, or not sure"
        : tier === "back" ? "turn it over to identify it" : metaHtml(cardMeta(card));
      item.li.querySelector(".badge").textContent = TIERS[tier].text;
      drawCrop(item.li.querySelector(".thumb"), live.image, card.polygon, 64);
    }
  }
  for (const [trackId, item] of inView) {
    if (!seen.has(trackId)) {
      item.li.remove();
      inView.delete(trackId);
    }
  }
}

function base64Blob(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
}

/** A correction of a card in an image: the whole image with the card's polygon when the polygon
 * lies inside it, else the card's crop alone. */
async function feedbackFile(imageBlob, image, polygon, width, height) {
  if (insideImage(polygon, width, height)) return { file: imageBlob, polygon };
  const crop = document.createElement("canvas");
  drawCrop(crop, image, polygon, 336);
  const blob = await canvasBlob(crop);
  return { file: new File([blob], "crop.jpg", { type: "image/jpeg" }), polygon: null };
}

function fixInView(trackId) {
  // The frame and scene as they are now, so the correction names this exact picture.
  const shot = { ...live };
  const card = shot.scene?.cards.find((c) => c.track_id === trackId);
  if (!card) return;
  openFix({
    title: "Correct this card",
    answer: `The device says: ${cardLabel(card)} (${TIERS[tierOf(card)].text})`,
    drawCrop: (canvas) => drawCrop(canvas, shot.image, card.polygon, 168),
    query: card.name || "",
    notCard: true,
    teachable: true,
    save: async (choice) => {
      const frame = new File([base64Blob(shot.jpeg, "image/jpeg")], `frame-${shot.frameId}.jpg`, { type: "image/jpeg" });
      const { file, polygon } = await feedbackFile(frame, shot.image, card.polygon, shot.scene.width, shot.scene.height);
      await api.feedback(file, {
        card_id: choice.card_id,
        not_a_card: choice.not_a_card ? "true" : undefined,
        teach: choice.teach ? "true" : undefined,
        polygon,
        note: `web page: live frame ${shot.frameId}, track ${card.track_id}, device said ${card.card_id ?? "unknown"}`,
      });
      notice(choice.not_a_card ? "Saved: not a card" : choice.teach
        ? "Correction saved and taught: the device knows this card from now on" : "Correction saved for the next bundle", "ok");
    },
  });
}

function initPreview() {
  $("pause").addEventListener("click", () => setPaused(!live.paused));
  $("overlay").addEventListener("click", (ev) => {
    if (!live.drawn) return;
    const box = $("overlay").getBoundingClientRect();
    const hit = hitCard(live.drawn, ev.clientX - box.left, ev.clientY - box.top);
    if (hit) fixInView(hit.track_id);
  });
  new ResizeObserver(() => redraw()).observe($("preview"));
  legend();
  previewLoop();
}

// -- status and events ---------------------------------------------------------------------

async function pollStatus() {
  try {
    const s = await api.status();
    $("bundle").textContent = s.bundle_id ? `bundle ${s.bundle_id}` : "no bundle";
    $("ready").textContent = s.ready ? "ready" : "not ready";
    $("ready").className = "pill " + (s.ready ? "ok" : "bad");
    $("ready").title = Object.entries(s.checks || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    $("fps").textContent = s.camera ? `${s.camera.fps.toFixed(1)} fps` : "no camera";
    $("camera").textContent = s.camera ? `Camera ${s.camera.reason}` : "No live camera configured.";
  } catch (e) {
    $("ready").textContent = e.status ? "error" : "offline";
    $("ready").className = "pill bad";
  }
  setTimeout(pollStatus, STATUS_MS);
}

function addEvent(type, data) {
  const li = document.createElement("li");
  const what = data.name ?? data.card_id ?? `track ${data.track_id}`;
  li.textContent = `${new Date().toLocaleTimeString()} ${type.replace("card_", "")}: ${what}`;
  const ol = $("events");
  ol.prepend(li);
  while (ol.children.length > 50) ol.lastChild.remove();
}

/** Server-sent events read through fetch, so a protected device gets its token (EventSource
 * cannot send one). Reconnects after a pause when the stream ends. */
async function listenEvents() {
  for (;;) {
    try {
      const r = await api.events();
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = block.match(/^event: (.*)$/m)?.[1];
          const data = block.match(/^data: (.*)$/m)?.[1];
          if (type && data) addEvent(type, JSON.parse(data));
        }
      }
    } catch { /* the device restarted or refused: try again below */ }
    await sleep(3000);
  }
}

// -- upload to identify --------------------------------------------------------------------

async function identify(ev) {
  ev.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const out = $("upload-result");
  out.innerHTML = '<li class="muted">identifying…</li>';
  $("identify-button").disabled = true;
  try {
    const [data, image] = await Promise.all([api.identify(file), createImageBitmap(file)]);
    const order = { verified: 0, probable: 1, unknown: 2, back: 3 };
    const cards = data.cards
      .map((c, i) => ({ ...c, identified: true, track_id: i }))
      .sort((a, b) => order[tierOf(a)] - order[tierOf(b)]);
    const canvas = $("upload-canvas");
    canvas.hidden = false;
    drawScene(canvas, image, data.width, data.height, cards);
    renderIdentified(out, file, image, data, cards);
  } catch (e) {
    out.innerHTML = `<li class="error">${esc(errorText(e))}</li>`;
  } finally {
    $("identify-button").disabled = false;
  }
}

function renderIdentified(out, file, image, data, cards) {
  out.innerHTML = cards.length ? "" : '<li class="muted">no card found in this photo</li>';
  for (const card of cards) {
    const tier = tierOf(card);
    const li = document.createElement("li");
    li.className = "card";
    li.dataset.tier = tier;
    const meta = tier === "back" ? esc("face down: turn it over to identify it")
      : tier === "unknown" ? esc(`closest: ${card.best_card_id}${card.reason ? " — " + card.reason : ""}`)
      : metaHtml([...cardMeta(card), card.inliers ? `${card.inliers} inliers` : card.reason]);
    li.innerHTML = `<canvas class="thumb"></canvas>
      <div class="text"><div class="name">${esc(cardLabel(card))}</div>
        <span class="badge">${esc(TIERS[tier].text)}</span> <span class="meta">${meta}</span></div>
      <button type="button" class="fix small">Fix</button>`;
    drawCrop(li.querySelector(".thumb"), image, card.polygon, 64);
    li.querySelector(".fix").addEventListener("click", () => openFix({
      title: "Correct this card",
      answer: `The device says: ${cardLabel(card)} (${TIERS[tier].text})`,
      drawCrop: (canvas) => drawCrop(canvas, image, card.polygon, 168),
      query: card.name || "",
      notCard: true,
    teachable: true,
      save: async (choice) => {
        const sent = await feedbackFile(file, image, card.polygon, data.width, data.height);
        await api.feedback(sent.file, {
          card_id: choice.card_id,
          not_a_card: choice.not_a_card ? "true" : undefined,
          teach: choice.teach ? "true" : undefined,
          polygon: sent.polygon,
          note: `web page: uploaded ${file.name}, device said ${card.card_id ?? "unknown"}`,
        });
        notice("Correction saved for the next bundle", "ok");
      },
    }));
    out.append(li);
  }
}

// -- start ---------------------------------------------------------------------------------

initToken();
initFix();
initPreview();
initLists();
$("identify-form").addEventListener("submit", identify);
pollStatus();
listenEvents();
