// The page's entry: picks the view from the path, keeps the live stream open, and records live
// latencies in window.roomtone (read by the browser tests and bench/web_live.py).
import { errorBox, getJson, setClasses } from "./api.js";
import { renderNow } from "./now.js";
import { renderTimeline } from "./timeline.js";
import { renderWindow } from "./window.js";
import { renderMics } from "./mics.js";
import { renderCorrections } from "./corrections.js";

const state = {
  latenciesMs: [],    // window end -> arrival on this page, one per live window
  windowsReceived: 0,
  readyMs: null,      // when the view was first rendered (ms since navigation start)
  gaps: 0,
  listeners: new Set(),
};
window.roomtone = state;

function openLiveStream() {
  const badge = document.getElementById("connection");
  const source = new EventSource("/api/live");
  source.addEventListener("open", () => { badge.textContent = "live"; badge.className = "connection up"; });
  source.addEventListener("error", () => { badge.textContent = "reconnecting…"; badge.className = "connection down"; });
  source.addEventListener("window", (event) => {
    const message = JSON.parse(event.data);
    state.latenciesMs.push(Date.now() - message.window.end_unix_ms);
    state.windowsReceived += 1;
    for (const listener of state.listeners) listener("window", message);
  });
  source.addEventListener("change", (event) => {
    const message = JSON.parse(event.data);
    for (const listener of state.listeners) listener("change", message);
  });
  source.addEventListener("gap", () => {
    state.gaps += 1;
    for (const listener of state.listeners) listener("gap", null);
  });
  return source;
}

async function main() {
  const view = document.getElementById("view");
  const path = location.pathname;
  const name = path === "/" ? "now" : path.startsWith("/window/") ? "window" : path.slice(1);
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
  }
  openLiveStream();
  try {
    const status = await getJson("/api/status");
    setClasses(status.classes);
    document.title = `roomtone · ${name === "window" ? "window" : name}`;
    if (name === "now") await renderNow(view, status, state);
    else if (name === "timeline") await renderTimeline(view, status);
    else if (name === "mics") await renderMics(view, status, state);
    else if (name === "corrections") await renderCorrections(view, status);
    else if (name === "window") await renderWindow(view, status, Number(path.split("/")[2]));
    view.dataset.ready = "true";
    state.readyMs = performance.now(); // first render, from navigation start
  } catch (error) {
    view.replaceChildren(errorBox(error));
    view.dataset.ready = "error";
    console.warn(error);
  }
}

main();
