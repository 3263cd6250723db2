// The device's HTTP API as the page uses it: every path in one place, the bearer token from
// localStorage on every request, errors as ApiError with the server's stable code.

const TOKEN_KEY = "cardedge.token";

export class ApiError extends Error {
  constructor(status, code, message, hint) {
    super(message);
    this.status = status;
    this.code = code;
    this.hint = hint;
  }
}

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

/** "/v1/lists" + "/" + each part, each part escaped. */
export function path(base, ...parts) {
  return [base, ...parts.map((p) => encodeURIComponent(String(p)))].join("/");
}

function withQuery(url, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) params.set(k, v);
  const qs = params.toString();
  return qs ? `${url}?${qs}` : url;
}

let onAuthError = () => {};
/** Called with the ApiError whenever the device refuses the token (401) or writes (403). */
export function setAuthErrorHandler(fn) {
  onAuthError = fn;
}

export async function request(method, url, { query, json, form, signal } = {}) {
  const headers = {};
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const r = await fetch(withQuery(url, query), { method, headers, body, signal, cache: "no-store" });
  if (!r.ok) {
    let err = { code: `http_${r.status}`, message: r.statusText || `HTTP ${r.status}` };
    try {
      err = await r.json();
    } catch { /* not JSON: keep the status line */ }
    const e = new ApiError(r.status, err.code, err.message || String(err.detail || ""), err.hint);
    if (r.status === 401 || r.status === 403) onAuthError(e);
    throw e;
  }
  return r;
}

const getJson = async (url, query) => (await request("GET", url, { query })).json();
const sendJson = async (method, url, json) => {
  const r = await request(method, url, { json });
  return r.status === 204 ? null : r.json();
};

export const api = {
  status: () => getJson("/v1/status"),
  snapshot: (signal) => request("GET", "/v1/snapshot", { signal }).then((r) => r.json()),
  events: (signal) => request("GET", "/v1/events", { signal }),
  searchCards: (q, limit = 20) => getJson("/v1/cards", { q, limit }),
  identify: (file) => {
    const form = new FormData();
    form.append("file", file);
    return request("POST", "/v1/identify", { form }).then((r) => r.json());
  },
  /** fields: card_id or not_a_card, polygon (4 x [x, y] in the file's pixels) or none, note. */
  feedback: (file, fields) => {
    const form = new FormData();
    form.append("file", file, file.name || "frame.jpg");
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined || v === null) continue;
      form.append(k, typeof v === "string" ? v : JSON.stringify(v));
    }
    return request("POST", "/v1/feedback", { form }).then((r) => r.json());
  },
  lists: () => getJson("/v1/lists"),
  list: (id) => getJson(path("/v1/lists", id)),
  startList: (name, note) => sendJson("POST", "/v1/lists", { name, note: note || undefined }),
  stopList: (id) => sendJson("POST", path("/v1/lists", id, "stop")),
  deleteEntry: (id, entryId) => sendJson("DELETE", path("/v1/lists", id, "entries", entryId)),
  fixEntry: (id, entryId, cardId, teach) =>
    sendJson("PATCH", path("/v1/lists", id, "entries", entryId), { card_id: cardId, teach }),
  exportList: (id, format) => request("GET", path("/v1/lists", id, "export"), { query: { format } }),
};
