// The correction dialog: show the card's crop and the device's answer, search the catalogue,
// pick the right card (or "not a card"), and hand the choice to the caller's save function.

import { api } from "./api.js";
import { errorText, esc } from "./ui.js";

const $ = (id) => document.getElementById(id);
const SEARCH_DELAY_MS = 200;

let current = null; // { save, teachable }
let chosen = null; // { card_id, name } or { not_a_card: true }
let searchTimer = 0;
let searchSeq = 0;

function choose(choice) {
  chosen = choice;
  $("fix-choice").textContent = choice.not_a_card
    ? "Not a card: the device will learn to ignore this"
    : `Right card: ${choice.name} (${choice.card_id})`;
  $("fix-save").disabled = false;
  for (const li of $("fix-results").children) li.classList.toggle("chosen", li.dataset.id === choice.card_id);
}

async function search(q) {
  const seq = ++searchSeq;
  const out = $("fix-results");
  if (!q.trim()) {
    out.innerHTML = "";
    return;
  }
  try {
    const data = await api.searchCards(q.trim(), 12);
    if (seq !== searchSeq) return; // a newer search is under way
    out.innerHTML = data.cards.length
      ? data.cards.map((c) => `<li data-id="${esc(c.card_id)}"><button type="button" class="pick">
          <span class="name">${esc(c.name)}</span>
          <span class="meta">${esc([c.set_name, c.number, c.card_id].filter(Boolean).join(" · "))}</span>
        </button></li>`).join("")
      : '<li class="muted">no card matches</li>';
    for (const li of out.querySelectorAll("li[data-id]")) {
      const card = data.cards.find((c) => c.card_id === li.dataset.id);
      li.querySelector("button").addEventListener("click", () => choose(card));
    }
  } catch (e) {
    if (seq === searchSeq) out.innerHTML = `<li class="error">${esc(e.message)}</li>`;
  }
}

/** Open the dialog. opts: title, answer (what the device said), drawCrop(canvas), query (a
 * first search), notCard (offer "not a card"), teachable (offer "teach"),
 * save({card_id, not_a_card, teach}) -> Promise. */
export function openFix(opts) {
  current = opts;
  chosen = null;
  $("fix-title").textContent = opts.title || "Correct this card";
  $("fix-answer").textContent = opts.answer || "";
  $("fix-choice").textContent = "Search the catalogue and pick the right card.";
  $("fix-error").textContent = "";
  $("fix-save").disabled = true;
  $("fix-not-card").hidden = !opts.notCard;
  $("fix-teach-row").hidden = !opts.teachable;
  $("fix-teach").checked = false;
  const crop = $("fix-crop");
  crop.getContext("2d").clearRect(0, 0, crop.width, crop.height);
  opts.drawCrop?.(crop);
  const input = $("fix-search");
  input.value = opts.query || "";
  $("fix-results").innerHTML = "";
  if (input.value) search(input.value);
  $("fix-dialog").showModal();
  input.focus();
}

async function save(ev) {
  ev.preventDefault();
  if (!current || !chosen) return;
  const button = $("fix-save");
  button.disabled = true;
  $("fix-error").textContent = "";
  try {
    await current.save({
      card_id: chosen.not_a_card ? null : chosen.card_id,
      not_a_card: !!chosen.not_a_card,
      teach: current.teachable && !chosen.not_a_card && $("fix-teach").checked,
    });
    $("fix-dialog").close();
  } catch (e) {
    $("fix-error").textContent = errorText(e);
    button.disabled = false;
  }
}

export function initFix() {
  $("fix-search").addEventListener("input", (ev) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(ev.target.value), SEARCH_DELAY_MS);
  });
  $("fix-not-card").addEventListener("click", () => choose({ not_a_card: true }));
  $("fix-form").addEventListener("submit", save);
  $("fix-cancel").addEventListener("click", () => $("fix-dialog").close());
}
