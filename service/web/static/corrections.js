// The Corrections view: every window a user said was really another activity, with a way to take a
// correction back. `roomtone train-head --corrections` refits the head on them (docs/sounds.md).
import { dateTime, getJson, h, labelColour, postJson } from "./api.js";

function row(correction, onRemoved) {
  const result = h("span", { class: "muted", role: "status" });
  const button = h("button", { type: "button", class: "remove-correction" }, "Remove");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await postJson(`/api/windows/${correction.window_id}/correction`, {}, "DELETE");
      onRemoved();
    } catch (error) {
      result.className = "error-box";
      result.textContent = `${error.message} (${error.reason})`;
      button.disabled = false;
    }
  });
  const windowCell = correction.window_kept
    ? h("a", { href: `/window/${correction.window_id}` }, `window ${correction.window_id}`)
    : h("span", { title: "retention deleted the window; the correction keeps its embedding" }, `window ${correction.window_id} (deleted)`);
  return h("tr", { class: "correction", "data-window": correction.window_id },
    h("td", {}, windowCell),
    h("td", {}, correction.mic_id),
    h("td", {}, dateTime(correction.start_unix_ms)),
    h("td", {}, correction.predicted || "–"),
    h("td", {}, h("span", { class: "swatch", style: `background:${labelColour(correction.label)}` }), correction.label),
    h("td", { class: "muted" }, dateTime(correction.created_unix_ms)),
    h("td", {}, button, result));
}

export async function renderCorrections(view, status) {
  if (!status.corrections) {
    view.replaceChildren(h("h1", {}, "Corrections"), h("p", { class: "muted" }, "This daemon serves no corrections."));
    return;
  }
  const body = await getJson("/api/corrections");
  const tbody = h("tbody", {});
  const count = h("p", { class: "muted", id: "corrections-count" });
  const refresh = () => {
    tbody.replaceChildren(...body.corrections.map((c) => row(c, () => {
      body.corrections = body.corrections.filter((x) => x.window_id !== c.window_id);
      refresh();
    })));
    count.textContent = body.corrections.length
      ? `${body.corrections.length} correction(s). Refit the head on them with roomtone train-head --corrections (docs/sounds.md).`
      : "No corrections yet: open a window (Timeline) and say what it really was.";
  };
  refresh();
  view.replaceChildren(h("h1", {}, "Corrections"), count,
    h("table", { class: "corrections" },
      h("thead", {}, h("tr", {}, ["Window", "Microphone", "Time", "Labelled", "Really", "Corrected", ""].map((t) => h("th", {}, t)))),
      tbody));
}
