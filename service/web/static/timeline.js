// The Timeline view: per microphone, activity sessions (when the daemon tracks them, [sessions]) or else
// runs of windows with the same activity, over the last hours or days; health changes marked; each run
// links to its first window. The runs come summarised from the daemon (/api/timeline, at most one per unit
// of a lane's width), so a week of windows is a few thousand rows, not every window.
import { clockTime, dateTime, duration, getJson, h, labelColour, s } from "./api.js";

const RANGES = { "1 h": 3600e3, "6 h": 6 * 3600e3, "24 h": 24 * 3600e3, "7 days": 7 * 24 * 3600e3 };
const MAX_PAGES = 10;
const LANE_WIDTH = 1000;

async function fetchAll(path, key) {
  const items = [];
  let page = "";
  for (let i = 0; i < MAX_PAGES; i++) {
    const body = await getJson(`${path}&page=${encodeURIComponent(page)}`);
    items.push(...body[key]);
    page = body.next_page;
    if (!page) break;
  }
  return items;
}

// The daemon's runs of one microphone (oldest first) as the lanes draw them.
export function runsOfSummary(runs, mic) {
  return runs.filter((r) => r.mic_id === mic).map((r) => ({ label: r.label, start: r.start_unix_ms,
    end: r.end_unix_ms, first: r.first_window_id, count: r.windows }));
}

// Sessions of one microphone (oldest first) as runs; an open session lasts until now.
export function runsOfSessions(sessions, until) {
  return sessions.map((s) => ({ label: s.activity, start: s.start_unix_ms, end: s.end_unix_ms ?? until,
    first: null, mic: s.mic_id, count: s.windows, open: s.end_unix_ms === null }));
}

// The page of a run's first window (a session knows its start, the store finds the window there).
async function openRun(mic, run) {
  let id = run.first;
  if (id === null) {
    const found = await getJson(`/api/windows?mic=${encodeURIComponent(mic)}&since_ms=${run.start}&until_ms=${run.start + 1}&limit=1`);
    if (!found.windows.length) return;
    id = found.windows[0].window_id;
  }
  location.href = `/window/${id}`;
}

function lane(mic, runs, changes, since, until) {
  const width = LANE_WIDTH;
  const x = (t) => ((t - since) / (until - since)) * width;
  const svg = s("svg", { viewBox: `0 0 ${width} 46`, preserveAspectRatio: "none", class: "lane", role: "img", "aria-label": `timeline of ${mic}` });
  for (const run of runs) {
    const rect = s("rect", {
      x: x(run.start).toFixed(2), y: 4, width: Math.max(1, x(run.end) - x(run.start)).toFixed(2), height: 24,
      fill: labelColour(run.label), class: "run", "data-window-id": run.first,
    }, s("title", {}, `${run.label || "no label"} ${clockTime(run.start)}–${clockTime(run.end)} (${run.count} windows)`));
    rect.addEventListener("click", () => openRun(mic, run));
    svg.append(rect);
  }
  for (const change of changes) {
    const cx = x(change.time_unix_ms).toFixed(2);
    svg.append(s("line", { x1: cx, x2: cx, y1: 0, y2: 46, class: `health-mark health-${change.current}` },
      s("title", {}, `health ${change.previous || "–"} → ${change.current} at ${dateTime(change.time_unix_ms)}: ${change.reasons.join("; ")}`)));
  }
  return svg;
}

export async function renderTimeline(view, status) {
  const picker = h("div", { class: "range" });
  const body = h("div", {});
  view.replaceChildren(h("h1", {}, "Timeline"), picker, body);

  async function show(label) {
    for (const b of picker.children) b.setAttribute("aria-pressed", String(b.textContent === label));
    body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    const until = Date.now();
    const asked = until - RANGES[label];
    const [summary, changes, sessions] = await Promise.all([
      getJson(`/api/timeline?since_ms=${asked}&until_ms=${until}&buckets=${LANE_WIDTH}`),
      fetchAll(`/api/changes?kind=health_changed&since_ms=${asked}&limit=10000`, "changes"),
      status.sessions ? fetchAll(`/api/sessions?since_ms=${asked}&limit=10000`, "sessions") : Promise.resolve([]),
    ]);
    // the lanes start at the oldest stored window in range, so a young store is not a sliver at the right
    const since = summary.oldest_start_ms ?? asked;
    const what = status.sessions ? "activity sessions" : "runs of windows with the same activity";
    const nodes = [h("p", { class: "muted" }, `${summary.windows} stored windows since ${dateTime(asked)}, shown as ${what}. Click one to open its first window; vertical marks are health changes.`)];
    const labels = new Set();
    const table = h("tbody", {});
    for (const mic of status.mics.map((m) => m.mic_id)) {
      const micSessions = sessions.filter((s) => s.mic_id === mic).reverse();
      // a microphone without a session yet (none long enough) still shows its windows
      const runs = micSessions.length ? runsOfSessions(micSessions, until) : runsOfSummary(summary.runs, mic);
      runs.forEach((r) => labels.add(r.label));
      nodes.push(h("section", { class: "card lane-card", "data-mic": mic },
        h("h2", {}, mic),
        lane(mic, runs, changes.filter((c) => c.mic_id === mic), since, until),
        h("div", { class: "axis muted" }, h("span", {}, dateTime(since)), h("span", {}, dateTime(until)))));
      for (const run of runs.slice(-50).reverse()) {
        table.append(h("tr", { class: "run-row" },
          h("td", {}, mic),
          h("td", {}, h("span", { class: "swatch", style: `background:${labelColour(run.label)}` }), run.label || "–"),
          h("td", {}, `${dateTime(run.start)} – ${run.open ? "now" : clockTime(run.end)}`),
          h("td", {}, duration(run.end - run.start)),
          h("td", {}, run.first !== null
            ? h("a", { href: `/window/${run.first}` }, `window ${run.first}`)
            : h("a", { href: "#", onclick: (e) => { e.preventDefault(); openRun(mic, run); } }, "first window"))));
      }
    }
    nodes.push(h("div", { class: "legend" }, [...labels].map((l) =>
      h("span", {}, h("span", { class: "swatch", style: `background:${labelColour(l)}` }), l || "no label"))));
    nodes.push(h("h2", {}, status.sessions ? "Latest sessions" : "Latest runs"),
      table.children.length
        ? h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["Microphone", "Activity", "When", "Length", ""].map((t) => h("th", {}, t)))), table)
        : h("p", {}, "No stored window in this range."));
    body.replaceChildren(...nodes);
    view.dataset.windows = String(summary.windows);
  }

  for (const label of Object.keys(RANGES)) {
    picker.append(h("button", { type: "button", onclick: () => show(label) }, label));
  }
  await show("6 h");
}
