// The Microphones view: capture status and the history of every health check per microphone: what
// an installer watches while placing a microphone (level, clipping, hum, dropouts, drift).
import { clockTime, dateTime, getJson, h, healthBadge, s } from "./api.js";

const HISTORY_MS = 6 * 3600e3;

function sparkline(points, since, until) {
  const width = 300, height = 40;
  const values = points.map(([, v]) => v).filter((v) => v !== null);
  if (!values.length) return h("span", { class: "muted" }, "no data");
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += 1; lo -= 1; }
  const xy = points.filter(([, v]) => v !== null)
    .map(([t, v]) => `${(((t - since) / (until - since)) * width).toFixed(1)},${(height - 2 - ((v - lo) / (hi - lo)) * (height - 4)).toFixed(1)}`);
  return s("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", preserveAspectRatio: "none" },
    s("polyline", { points: xy.join(" "), fill: "none", stroke: "currentColor", "stroke-width": 1.5 }));
}

export async function renderMics(view, status, live) {
  const until = Date.now();
  const since = until - HISTORY_MS;
  const sections = [];
  for (const mic of status.mics) {
    const [windows, changes] = await Promise.all([
      getJson(`/api/windows?mic=${encodeURIComponent(mic.mic_id)}&since_ms=${since}&limit=2160`),
      getJson(`/api/changes?kind=health_changed&mic=${encodeURIComponent(mic.mic_id)}&limit=20`),
    ]);
    const rows = windows.windows.slice().reverse();
    const from = rows.length ? rows[0].start_unix_ms : since; // the charts span the stored history, at most 6 h
    const checks = [...new Set(rows.flatMap((w) => Object.keys(w.health_scores)))].sort();
    const series = [["level (dBFS)", rows.map((w) => [w.start_unix_ms, w.rms_dbfs])],
      ...checks.map((check) => [check, rows.map((w) => [w.start_unix_ms, w.health_scores[check] ?? null])])];
    const history = h("tbody", {}, series.map(([name, points]) => {
      const values = points.map(([, v]) => v).filter((v) => v !== null);
      const show = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(3));
      return h("tr", { class: "check-row", "data-check": name },
        h("td", {}, name),
        h("td", {}, sparkline(points, from, until)),
        h("td", {}, values.length ? show(values[values.length - 1]) : "–"),
        h("td", { class: "muted" }, values.length ? `${show(Math.min(...values))} … ${show(Math.max(...values))}` : ""));
    }));
    sections.push(h("section", { class: "card", "data-mic": mic.mic_id },
      h("header", {}, h("h2", {}, mic.mic_id), healthBadge(mic.health_state)),
      h("dl", { class: "facts" },
        h("dt", {}, "Device"), h("dd", {}, mic.device),
        h("dt", {}, "Capture"), h("dd", { class: `capture capture-${mic.state}` }, mic.state),
        h("dt", {}, "Last window"), h("dd", {}, mic.last_window_end_unix_ms ? dateTime(mic.last_window_end_unix_ms) : "none yet"),
        h("dt", {}, "Failing checks"), h("dd", {}, mic.health_reasons.length ? mic.health_reasons.join("; ") : "none")),
      h("h3", {}, `Health checks since ${rows.length ? dateTime(from) : "6 h ago"} (${rows.length} windows; the value is the newest)`),
      h("table", { class: "history" },
        h("thead", {}, h("tr", {}, ["Check", "History", "Newest", "Range"].map((c) => h("th", {}, c)))), history),
      h("h3", {}, "Health changes"),
      changes.changes.length
        ? h("ul", { class: "changes" }, changes.changes.map((c) => h("li", {},
          `${dateTime(c.time_unix_ms)}: ${c.previous || "start"} → `, healthBadge(c.current),
          c.reasons.length ? ` ${c.reasons.join("; ")}` : "",
          c.window_id ? h("a", { href: `/window/${c.window_id}` }, " window") : null)))
        : h("p", { class: "muted" }, "No health change stored.")));
  }
  view.replaceChildren(h("h1", {}, "Microphones"),
    h("p", { class: "muted" }, "Placing a microphone: keep the level well below 0 dBFS (no clipping), away from mains hum and fans; "
      + "drift rises when a microphone's sound changes (moved, covered, failing). docs/mic-health.md explains each check."),
    ...sections);
  live.listeners.add((kind, message) => {
    if (kind === "change" && message.kind === "health_changed") {
      const note = document.querySelector(`section[data-mic="${CSS.escape(message.mic_id)}"] .facts`);
      if (note) note.dataset.changedAt = clockTime(message.time_unix_ms);
    }
  });
}
