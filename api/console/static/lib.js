// Shared helpers of the console: the API client (bearer key from sessionStorage), the SSE reader,
// a tiny DOM builder and formatting. No dependencies: the page loads nothing but its own origin.

const KEY_STORAGE = "agentlog.console.key";

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  const key = storedKey();
  return { Accept: "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) search.append(name, String(one));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Every call goes through here: a 401 sends the user back to the login form.
export async function api(path, { method = "GET", params, body, signal } = {}) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}), signal };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(`${path}${query(params)}`, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    if (response.status === 401) document.dispatchEvent(new CustomEvent("console:unauthorized"));
    throw new ApiError(response.status, data);
  }
  return data;
}

// EventSource cannot send an Authorization header, so the stream is read with fetch() and parsed
// here: blocks separated by a blank line, with `id:`, `event:` and `data:` fields.
export async function readEventStream(path, params, onMessage, signal) {
  const response = await fetch(`${path}${query(params)}`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const message = { id: null, event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data += (message.data ? "\n" : "") + text;
        else if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
      }
      if (message.data) onMessage({ ...message, data: JSON.parse(message.data) });
    }
  }
}

// h("div.card#x", {onclick}, children...): elements without innerHTML, so no text is ever markup.
export function h(spec, attrs, ...children) {
  const [, tag = "div", rest = ""] = spec.match(/^([a-z0-9-]*)(.*)$/i);
  const el = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  // Anything but a plain object (a string, a number, even 0, a node, a list) is the first child.
  if (attrs !== null && attrs !== undefined && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

// Search highlights are HTML-escaped text with <em> around the matches (docs/api.md). They are
// parsed inertly and rebuilt from text nodes and <mark>s, so nothing else can become markup.
export function highlighted(fragment) {
  const doc = new DOMParser().parseFromString(`<body>${fragment}</body>`, "text/html");
  const out = h("span.fragment");
  for (const node of doc.body.childNodes) {
    if (node.nodeType === Node.ELEMENT_NODE && node.tagName === "EM") out.append(h("mark", node.textContent));
    else out.append(document.createTextNode(node.textContent));
  }
  return out;
}

export function fmtTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19);
}

export function fmtCost(value) {
  return value === null || value === undefined ? "—" : `$${Number(value).toFixed(6)}`;
}

export function fmtMs(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

export function fmtNumber(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

export function statusBadge(status) {
  return h(`span.badge.status-${String(status || "unknown").toLowerCase()}`, status || "unknown");
}

export function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

export function errorBox(error) {
  return h("p.error", { role: "alert" }, error instanceof ApiError ? `${error.status}: ${error.message}` : String(error));
}

export function short(id) {
  return id ? String(id).slice(0, 8) : "—";
}
