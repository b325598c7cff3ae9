// Fetching from the daemon's /api and small formatting helpers shared by the views.

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

// JSON from the daemon; an error response becomes an ApiError carrying the daemon's reason and message.
export async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    const err = body && body.error ? body.error : { reason: "http_" + response.status, message: response.statusText };
    throw new ApiError(response.status, err.reason, err.message);
  }
  return body;
}

// POST (or another method's) JSON to the daemon; the answer as getJson gives it.
export async function postJson(path, body, method = "POST") {
  const response = await fetch(path, { method, headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body) });
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const err = answer && answer.error ? answer.error : { reason: "http_" + response.status, message: response.statusText };
    throw new ApiError(response.status, err.reason, err.message);
  }
  return answer;
}

// An element with attributes and children (strings become text nodes, never HTML).
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// An SVG element (same rules as h).
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

export function clockTime(unixMs) {
  return new Date(unixMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function dateTime(unixMs) {
  return new Date(unixMs).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

export function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function percent(p) {
  return p === null || p === undefined ? "–" : `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)} %`;
}

export function dbfs(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(1)} dBFS`;
}

// Distinct colours for the model's classes, in the order /api/status lists them (setClasses).
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#bcbd22", "#393b79", "#637939", "#ad494a"];
let classOrder = [];
// The labels roomtone gives instead of a class (service/daemon_vocabulary.py RESERVED_LABELS).
const RESERVED = { quiet: "#b8bec8", unknown: "#5b6270" };

export function setClasses(classes) {
  classOrder = classes || [];
}

// A stable colour per activity label (the same label has the same colour in every view).
export function labelColour(label) {
  if (!label) return "#8a8f98";
  if (label in RESERVED) return RESERVED[label];
  const index = classOrder.indexOf(label);
  if (index >= 0 && index < PALETTE.length) return PALETTE[index];
  let hash = 0;
  for (const ch of label) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 60% 48%)`;
}

export function healthBadge(state) {
  return h("span", { class: `badge health-${state || "unknown"}` }, state || "no window yet");
}

// Probability bars, highest first; `limit` bars at most.
export function probabilityBars(probabilities, limit = 5) {
  const rows = Object.entries(probabilities || {}).sort((a, b) => b[1] - a[1]).slice(0, limit);
  if (!rows.length) return h("p", { class: "muted" }, "No activity head in this model: health only.");
  return h("ul", { class: "bars" }, rows.map(([name, p]) =>
    h("li", {},
      h("span", { class: "bar-label" }, name),
      h("span", { class: "bar" }, h("span", { class: "bar-fill", style: `width:${(100 * p).toFixed(1)}%;background:${labelColour(name)}` })),
      h("span", { class: "bar-value" }, percent(p)))));
}

export function errorBox(error) {
  const reason = error.reason ? h("code", {}, ` (${error.reason})`) : null;
  return h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Could not load: "), error.message, reason);
}
