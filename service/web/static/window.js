// The Window view: one stored window's probabilities, health scores and drift, its clip when clips
// are kept, and "find similar" over the stored windows.
import { dateTime, dbfs, getJson, h, healthBadge, labelColour, percent, postJson, probabilityBars } from "./api.js";

function scoresTable(scores) {
  const rows = Object.entries(scores).sort(([a], [b]) => a.localeCompare(b));
  return h("table", { class: "scores" },
    h("thead", {}, h("tr", {}, h("th", {}, "Check"), h("th", {}, "Score"))),
    h("tbody", {}, rows.map(([name, value]) =>
      h("tr", { class: name.startsWith("drift") ? "drift" : null },
        h("td", {}, name), h("td", {}, value === null ? "–" : value.toPrecision(3))))));
}

async function findSimilar(windowId, target, button) {
  button.disabled = true;
  target.replaceChildren(h("p", { class: "muted" }, "Searching…"));
  try {
    const body = await getJson(`/api/windows/${windowId}/similar?k=10`);
    if (!body.neighbors.length) {
      target.replaceChildren(h("p", {}, `No similar window among ${body.searched} stored windows.`));
      return;
    }
    target.replaceChildren(
      h("p", { class: "muted" }, `Nearest of ${body.searched} stored windows (cosine distance).`),
      h("ol", { class: "similar" }, body.neighbors.map(({ window: w, distance }) =>
        h("li", { class: "neighbor" },
          h("a", { href: `/window/${w.window_id}` }, `window ${w.window_id}`), " ",
          h("span", { class: "swatch", style: `background:${labelColour(w.label)}` }), w.label || "–",
          h("span", { class: "muted" }, ` · ${w.mic_id} · ${dateTime(w.start_unix_ms)} · distance ${distance.toFixed(3)}`)))));
  } catch (error) {
    target.replaceChildren(h("p", { class: "error-box" }, `Find similar failed: ${error.message}`));
  } finally {
    button.disabled = false;
  }
}

// "This is a...": teach a custom sound this window (a new sound, or one more example of a sound).
async function teachSection(windowId, status) {
  const section = h("section", { class: "card", id: "teach" }, h("h2", {}, "This is a…"));
  if (!status.sounds) {
    section.append(h("p", { class: "muted" }, "Custom sounds are off ([sounds] enabled = false)."));
    return section;
  }
  const known = await getJson("/api/sounds");
  const input = h("input", { id: "sound-name", list: "known-sounds", placeholder: "doorbell", required: true,
    pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", autocomplete: "off" });
  const result = h("p", { id: "teach-result", role: "status" });
  const button = h("button", { type: "submit" }, "Teach this sound");
  const form = h("form", { class: "teach" }, input, h("datalist", { id: "known-sounds" },
    known.sounds.map((s) => h("option", { value: s.name }))), button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    result.className = "muted";
    result.textContent = "Teaching…";
    try {
      const { sound } = await postJson(`/api/windows/${windowId}/sound`, { name: input.value.trim() });
      result.className = "ok";
      result.textContent = `Window ${windowId} is an example of "${sound.name}" (${sound.examples} examples, threshold ${sound.threshold.toFixed(3)}). It is detected on new windows from now on.`;
    } catch (error) {
      result.className = "error-box";
      result.textContent = `${error.message} (${error.reason})`;
    } finally {
      button.disabled = false;
    }
  });
  section.append(
    h("p", { class: "muted" }, "Name what this window is (a-z, 0-9, _ and -) to teach roomtone a custom sound from it, "
      + "or add it to a sound you taught before. docs/sounds.md explains how sounds are detected."),
    form, result);
  return section;
}

export async function renderWindow(view, status, windowId) {
  const w = await getJson(`/api/windows/${windowId}`);
  const similar = h("div", { id: "similar" });
  const button = h("button", { type: "button", id: "find-similar" }, "Find similar");
  button.addEventListener("click", () => findSimilar(windowId, similar, button));
  const audio = w.clip_url
    ? h("audio", { controls: true, preload: "metadata", src: w.clip_url, id: "clip" })
    : h("p", { class: "muted" }, status.clips === "none"
      ? "Clips are not kept ([clips] keep = \"none\"), so this window cannot be played. See docs/web.md."
      : "This window's clip was not kept (or has expired).");
  view.replaceChildren(
    h("h1", {}, `Window ${w.window_id}`),
    h("p", { class: "muted" }, `${w.mic_id} · ${dateTime(w.start_unix_ms)} – ${dateTime(w.end_unix_ms)} · level ${dbfs(w.rms_dbfs)}`),
    h("div", { class: "two-col" },
      h("section", { class: "card" }, h("h2", {}, "Activity"),
        h("p", { class: "activity", style: `color:${labelColour(w.label)}` }, w.label || "–"),
        probabilityBars(w.probabilities, 20),
        h("h2", {}, "Listen"), audio),
      h("section", { class: "card" }, h("h2", {}, "Health "), healthBadge(w.health_state),
        w.health_reasons.length ? h("ul", { class: "reasons" }, w.health_reasons.map((r) => h("li", {}, r))) : h("p", { class: "muted" }, "Every check passes."),
        scoresTable(w.health_scores))),
    h("section", { class: "card" }, h("h2", {}, "Similar windows"), button, similar),
    await teachSection(windowId, status));
  view.dataset.label = w.label || "";
  view.dataset.top = percent(Math.max(0, ...Object.values(w.probabilities)));
}
