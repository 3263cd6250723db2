// Small helpers shared by the page's modules: HTML escaping, the notice bar, times.

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** Parts joined by " · ", each kept on one line (a card id like s01-014 must not break). */
export function metaHtml(parts) {
  return parts.filter(Boolean).map((p) => `<span class="nw">${esc(p)}</span>`).join(" · ");
}

let noticeTimer = 0;
/** A message in the bar under the header; errors stay until the next message. */
export function notice(text, kind = "info") {
  const bar = document.getElementById("notice");
  bar.textContent = text;
  bar.className = `notice ${kind}`;
  bar.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && kind !== "error") noticeTimer = setTimeout(() => (bar.hidden = true), 3000);
}

export function errorText(e) {
  return `${e.code ? e.code + ": " : ""}${e.message}${e.hint ? " — " + e.hint : ""}`;
}

export function clockTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? "") : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
