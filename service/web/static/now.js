// The Now view: per microphone, the current activity with probabilities, level, health with the
// failing checks, and a live log-Mel strip of the last windows (computed by the daemon).
import { clockTime, dbfs, getJson, h, healthBadge, labelColour, probabilityBars } from "./api.js";

const STRIP_WINDOWS = 30;

// A viridis-like colour map: 256 entries of [r, g, b], interpolated between five anchors.
const ANCHORS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const PALETTE = Array.from({ length: 256 }, (_, i) => {
  const t = (i / 255) * (ANCHORS.length - 1);
  const k = Math.min(ANCHORS.length - 2, Math.floor(t));
  return ANCHORS[k].map((c, j) => Math.round(c + (t - k) * (ANCHORS[k + 1][j] - c)));
});

// The strips of the last windows side by side; with overlapping windows (hop < window) only each
// window's newest hop is drawn, so the strip reads as continuous time.
function drawStrip(canvas, strips, hopFraction) {
  if (!strips.length) return;
  const { bins, columns } = strips[0];
  const shown = Math.max(1, Math.round(columns * hopFraction));
  canvas.width = shown * STRIP_WINDOWS;
  canvas.height = bins;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const offset = STRIP_WINDOWS - strips.length;
  strips.forEach((strip, k) => {
    const bytes = Uint8Array.from(atob(strip.data), (c) => c.charCodeAt(0));
    const image = ctx.createImageData(shown, strip.bins);
    for (let row = 0; row < strip.bins; row++) {
      for (let col = 0; col < shown; col++) {
        const [r, g, b] = PALETTE[bytes[row * strip.columns + (strip.columns - shown + col)]];
        const at = ((strip.bins - 1 - row) * shown + col) * 4; // low frequencies at the bottom
        image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
      }
    }
    ctx.putImageData(image, (offset + k) * shown, 0);
  });
}

function micCard(mic) {
  const card = {
    strips: [],
    label: h("span", { class: "activity" }, mic.label || "–"),
    health: h("span", {}, healthBadge(mic.health_state)),
    reasons: h("ul", { class: "reasons" }),
    level: h("span", { class: "level" }, "–"),
    meter: h("span", { class: "meter-fill" }),
    bars: h("div", {}),
    when: h("span", { class: "muted when" }, "waiting for the first window…"),
    capture: h("span", { class: "muted" }, `capture: ${mic.state}`),
    canvas: h("canvas", { class: "mel-strip", width: 600, height: 64, "aria-label": `log-Mel of the last windows of ${mic.mic_id}` }),
  };
  card.node = h("section", { class: "card mic-card", "data-mic": mic.mic_id },
    h("header", {}, h("h2", {}, mic.mic_id), card.health, card.capture),
    h("p", { class: "device muted" }, mic.device),
    h("div", { class: "now-row" },
      h("div", {}, h("div", { class: "caption" }, "Activity"), card.label, card.bars),
      h("div", {}, h("div", { class: "caption" }, "Level"), card.level, h("span", { class: "meter" }, card.meter),
        h("div", { class: "caption" }, "Health"), card.reasons)),
    h("div", { class: "caption" }, "Log-Mel of the last windows (newest right, low frequencies at the bottom)"),
    card.canvas,
    h("p", {}, card.when));
  return card;
}

function showWindow(card, message, hopFraction) {
  const w = message.window;
  card.node.dataset.windowId = w.window_id;
  card.node.dataset.windowEnd = w.end_unix_ms;
  card.label.textContent = w.label || "–";
  card.label.style.color = labelColour(w.label);
  card.bars.replaceChildren(probabilityBars(w.probabilities, 4));
  card.health.replaceChildren(healthBadge(w.health_state));
  card.level.textContent = dbfs(w.rms_dbfs);
  const level = w.rms_dbfs === null ? 0 : Math.max(0, Math.min(1, (w.rms_dbfs + 90) / 90));
  card.meter.style.width = `${(100 * level).toFixed(0)}%`;
  const failing = Object.entries(message.failing || {}).filter(([, bad]) => bad).map(([name]) => name);
  card.reasons.replaceChildren(...(w.health_reasons.length
    ? w.health_reasons.map((r) => h("li", {}, r))
    : [h("li", { class: "muted" }, failing.length ? `failing: ${failing.join(", ")}` : "every check passes")]));
  card.when.replaceChildren(`window ${clockTime(w.start_unix_ms)}–${clockTime(w.end_unix_ms)} · `,
    h("a", { href: `/window/${w.window_id}` }, "open this window"));
  if (message.strip) {
    card.strips.push(message.strip);
    if (card.strips.length > STRIP_WINDOWS) card.strips.shift();
    drawStrip(card.canvas, card.strips, hopFraction);
  }
}

export async function renderNow(view, status, live) {
  const cards = new Map();
  const hopFraction = Math.min(1, status.hop_s / status.window_s);
  const grid = h("div", { class: "mic-grid" });
  for (const mic of status.mics) {
    const card = micCard(mic);
    cards.set(mic.mic_id, card);
    grid.append(card.node);
    for (const message of status.recent[mic.mic_id] || []) showWindow(card, message, hopFraction);
  }
  view.replaceChildren(
    h("h1", {}, "Now"),
    h("p", { class: "muted" }, `What each microphone hears: one ${status.window_s} s window every ${status.hop_s} s.`),
    status.mics.length ? grid : h("p", {}, "No microphone is configured."));
  live.listeners.add(async (kind, message) => {
    if (kind === "gap") { // this page fell behind and lost messages: start again from the daemon's snapshot
      const fresh = await getJson("/api/status");
      for (const [mic, card] of cards) {
        card.strips = [];
        for (const recent of fresh.recent[mic] || []) showWindow(card, recent, hopFraction);
      }
      return;
    }
    if (kind !== "window") return;
    const card = cards.get(message.window.mic_id);
    if (card) showWindow(card, message, hopFraction);
  });
}
