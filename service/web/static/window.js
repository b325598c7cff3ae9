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

// Custom sounds heard in this window: where (a bar over the window's length), the score, and "Not this".
function detectionsSection(w) {
  const section = h("section", { class: "card", id: "detections" }, h("h2", {}, "Custom sounds heard"));
  if (!w.detections.length) {
    section.append(h("p", { class: "muted" }, "No custom sound was detected in this window."));
    return section;
  }
  const length = w.end_unix_ms - w.start_unix_ms;
  section.append(h("ul", { class: "detections" }, w.detections.map((d) => {
    const result = h("span", { class: "muted", role: "status" });
    const button = h("button", { type: "button", class: "not-this", "data-sound": d.current, disabled: d.not_this || null },
      d.not_this ? "Marked “not this”" : "Not this");
    button.addEventListener("click", async () => {
      button.disabled = true;
      result.className = "muted";
      result.textContent = " Recalibrating…";
      try {
        const { sound } = await postJson(`/api/windows/${w.window_id}/not-this`, { name: d.current });
        button.textContent = "Marked “not this”";
        result.className = "ok";
        result.textContent = ` ${sound.name}: ${sound.not_this} detection(s) marked, threshold ${sound.threshold.toFixed(3)}.`;
      } catch (error) {
        button.disabled = false;
        result.className = "error-box";
        result.textContent = ` ${error.message} (${error.reason})`;
      }
    });
    const start = d.start_offset_ms ?? 0;
    const end = d.end_offset_ms || length;
    const bar = h("span", { class: "span-bar", title: `${(start / 1000).toFixed(1)}–${(end / 1000).toFixed(1)} s of the window` },
      h("span", { class: "span-mark", style: `left:${(100 * start / length).toFixed(1)}%;width:${(100 * Math.max(end - start, 1) / length).toFixed(1)}%` }));
    return h("li", { class: "detection", "data-sound": d.current },
      h("strong", {}, d.current), ` at ${(start / 1000).toFixed(1)}–${(end / 1000).toFixed(1)} s`, " ", bar,
      h("span", { class: "muted" }, ` score ${d.score === null ? "–" : d.score.toFixed(3)} · event ${d.event_id} `), button, result);
  })));
  section.append(h("p", { class: "muted" }, "“Not this” tells roomtone a detection was wrong: the window becomes a "
    + "negative example of that sound and its threshold is recalibrated. docs/sounds.md explains it."));
  return section;
}

// "This was really a...": correct the window's activity to one of the head's classes, or take it back.
function correctionSection(w, status) {
  const section = h("section", { class: "card", id: "correction" }, h("h2", {}, "Wrong label?"));
  if (!status.corrections || !status.classes.length) {
    section.append(h("p", { class: "muted" }, "The model has no activity head, so there is nothing to correct."));
    return section;
  }
  const current = h("p", { id: "correction-current" });
  const result = h("p", { id: "correction-result", role: "status" });
  const select = h("select", { id: "correction-label", required: true },
    h("option", { value: "" }, "choose…"), status.classes.map((c) => h("option", { value: c }, c)));
  const save = h("button", { type: "submit" }, "Save correction");
  const remove = h("button", { type: "button", id: "remove-correction" }, "Remove correction");
  const show = (correction) => {
    current.className = correction ? "ok" : "muted";
    current.textContent = correction
      ? `Corrected: this window was really "${correction.label}" (labelled ${correction.predicted || "–"}).`
      : "Not corrected.";
    remove.hidden = !correction;
    if (correction) select.value = correction.label;
  };
  const run = async (work) => {
    save.disabled = remove.disabled = true;
    result.className = "muted";
    result.textContent = "Saving…";
    try {
      await work();
      result.textContent = "";
    } catch (error) {
      result.className = "error-box";
      result.textContent = `${error.message} (${error.reason})`;
    } finally {
      save.disabled = remove.disabled = false;
    }
  };
  const form = h("form", { class: "teach" }, h("label", { for: "correction-label" }, "This window was really "), select, save);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => show((await postJson(`/api/windows/${w.window_id}/correction`, { label: select.value })).correction));
  });
  remove.addEventListener("click", () => run(async () => {
    await postJson(`/api/windows/${w.window_id}/correction`, {}, "DELETE");
    select.value = "";
    show(null);
  }));
  show(w.correction);
  section.append(h("p", { class: "muted" }, "Say which activity this window really was. Corrections do not change "
    + "live labels: roomtone train-head --corrections refits the head on them (docs/sounds.md). All corrections: ",
  h("a", { href: "/corrections" }, "Corrections"), "."), current, form, remove, result);
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
    detectionsSection(w),
    correctionSection(w, status),
    h("section", { class: "card" }, h("h2", {}, "Similar windows"), button, similar),
    await teachSection(windowId, status));
  view.dataset.label = w.label || "";
  view.dataset.top = percent(Math.max(0, ...Object.values(w.probabilities)));
}
