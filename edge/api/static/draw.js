// Drawing on canvases: a frame with its cards' polygons and labels, and card crops (thumbnails).
// Pure functions of their arguments; no network, no page state.

// One colour and dash per tier, so a tier reads without colour vision too; style.css matches.
export const TIERS = {
  verified: { colour: "#2fd16a", dash: [], text: "verified" },
  probable: { colour: "#f5b83d", dash: [10, 5], text: "probable" },
  unknown: { colour: "#ff5c8a", dash: [4, 4], text: "unknown" },
  back: { colour: "#7fb2ff", dash: [12, 4, 2, 4], text: "face down" },
  pending: { colour: "#a8b0bd", dash: [2, 5], text: "identifying" },
};

const LABEL_FONT_PX = 13;

export function tierOf(card) {
  if (!card.identified) return "pending";
  return TIERS[card.confidence] ? card.confidence : card.known ? "probable" : "unknown";
}

export function cardLabel(card) {
  const tier = tierOf(card);
  if (tier === "pending") return "identifying…";
  if (tier === "unknown") return "unknown card";
  if (tier === "back") return "card back";
  return card.name || card.card_id || "?";
}

/** Size the canvas's backing store to its CSS box times the device pixel ratio; returns the
 * CSS width and height so callers draw in CSS pixels (the transform maps them to device pixels). */
export function fitCanvas(canvas, aspect) {
  canvas.style.aspectRatio = String(aspect);
  const cssW = canvas.clientWidth || canvas.parentElement.clientWidth || 640;
  const cssH = cssW / aspect;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, cssW, cssH };
}

function roundedRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/** A label box near the polygon's top vertex, inside the canvas, clear of labels already placed. */
function placeLabel(points, w, h, cssW, cssH, placed) {
  const top = points.reduce((a, p) => (p[1] < a[1] ? p : a), points[0]);
  const box = { x: top[0] - w / 2, y: top[1] - h - 6, w, h };
  if (box.y < 2) box.y = top[1] + 6; // no room above the card: just inside its top
  for (let i = 0; i < 8 && placed.some((o) => overlaps(o, box)); i++) box.y += h + 3;
  box.x = Math.min(Math.max(2, box.x), cssW - w - 2);
  box.y = Math.min(Math.max(2, box.y), cssH - h - 2);
  return box;
}

/** Draw `image` (frame pixels `width` x `height`) filling the canvas, then every card's polygon
 * and label; returns what was drawn (polygons in frame and in CSS pixels) for tests and clicks. */
export function drawScene(canvas, image, width, height, cards, { highlight = null } = {}) {
  const { ctx, cssW, cssH } = fitCanvas(canvas, width / height);
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.drawImage(image, 0, 0, cssW, cssH);
  const scale = cssW / width;
  const drawn = [];
  const placed = [];
  ctx.font = `600 ${LABEL_FONT_PX}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
  ctx.textBaseline = "middle";
  ctx.lineJoin = "round";
  for (const card of cards) {
    const tier = tierOf(card);
    const style = TIERS[tier];
    const points = card.polygon.map(([x, y]) => [x * scale, y * scale]);
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.setLineDash([]);
    ctx.lineWidth = 4.5;
    ctx.strokeStyle = "rgba(0,0,0,.55)"; // a dark halo keeps the line visible on any table
    ctx.stroke();
    ctx.setLineDash(style.dash);
    ctx.lineWidth = card.track_id === highlight ? 4 : 2.5;
    ctx.strokeStyle = style.colour;
    ctx.stroke();
    ctx.setLineDash([]);

    const text = cardLabel(card);
    const tw = Math.min(ctx.measureText(text).width, cssW * 0.6);
    const box = placeLabel(points, tw + 12, LABEL_FONT_PX + 8, cssW, cssH, placed);
    placed.push(box);
    roundedRect(ctx, box.x, box.y, box.w, box.h, 4);
    ctx.fillStyle = style.colour;
    ctx.fill();
    ctx.fillStyle = "#111";
    ctx.fillText(text, box.x + 6, box.y + box.h / 2 + 0.5, tw);
    drawn.push({ track_id: card.track_id, tier, polygon: card.polygon, points, label: box });
  }
  return { width, height, scale, cssW, cssH, cards: drawn };
}

/** The card inside `polygon` (4 corners, clockwise from its top-left, in image pixels) drawn
 * upright into `canvas` at `height` CSS pixels: an affine map of three corners, a close enough
 * rectification for a thumbnail. */
export function drawCrop(canvas, image, polygon, height = 64) {
  const [p0, p1, , p3] = polygon;
  const ex = [p1[0] - p0[0], p1[1] - p0[1]], ey = [p3[0] - p0[0], p3[1] - p0[1]];
  const cw = Math.hypot(...ex), ch = Math.hypot(...ey);
  if (cw < 1 || ch < 1) return;
  const outH = height, outW = Math.max(1, Math.round((height * cw) / ch));
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(outW * dpr);
  canvas.height = Math.round(outH * dpr);
  canvas.style.width = outW + "px";
  canvas.style.height = outH + "px";
  const ctx = canvas.getContext("2d");
  // Output pixel (u, v) comes from image point p0 + u * ex / W + v * ey / H: invert that map.
  const W = canvas.width, H = canvas.height;
  const a = ex[0] / W, b = ex[1] / W, c = ey[0] / H, d = ey[1] / H;
  const det = a * d - b * c;
  if (Math.abs(det) < 1e-9) return;
  const ia = d / det, ib = -b / det, ic = -c / det, id = a / det;
  ctx.setTransform(ia, ib, ic, id, -(ia * p0[0] + ic * p0[1]), -(ib * p0[0] + id * p0[1]));
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
}

/** Whether every corner lies inside a `width` x `height` image. */
export function insideImage(polygon, width, height) {
  return polygon.every(([x, y]) => x >= 0 && y >= 0 && x <= width && y <= height);
}

/** Whether CSS point (x, y) on a drawn scene lies inside a card's polygon (for clicks). */
export function hitCard(drawn, x, y) {
  for (const card of [...drawn.cards].reverse()) {
    let inside = false;
    const pts = card.points;
    for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
      const [xi, yi] = pts[i], [xj, yj] = pts[j];
      if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    if (inside) return card;
  }
  return null;
}
