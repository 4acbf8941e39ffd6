// Search: full text over the audit index (GET /v1/search), filters, highlighted hits that link to
// the event in its task's timeline.
import { api, errorBox, fmtTime, h, highlighted, short } from "../lib.js";

const TYPES = ["", "TaskSubmitted", "LlmCallRequested", "LlmCallCompleted", "ToolCallRequested", "ToolCallCompleted", "ToolCallDenied", "ApprovalRequested", "TaskCompleted", "TaskFailed"];

export function render({ root, params, navigate }) {
  const q = h("input#search-q", { type: "search", name: "q", value: params.get("q") || "", placeholder: "words, \"a phrase\", -not, pref*", "aria-label": "Search text" });
  const type = h("select", { name: "event_type", "aria-label": "Event type" }, TYPES.map((t) => h("option", { value: t, selected: params.get("event_type") === t }, t || "any event")));
  const task = h("input", { type: "text", name: "task_id", value: params.get("task_id") || "", placeholder: "task id", "aria-label": "Task id" });
  const from = h("input", { type: "datetime-local", name: "from", value: params.get("from") || "", "aria-label": "From" });
  const to = h("input", { type: "datetime-local", name: "to", value: params.get("to") || "", "aria-label": "To" });
  const results = h("div#search-results", { "aria-live": "polite" });
  const cursors = [null];

  async function run() {
    if (!params.get("q") && !params.get("task_id") && !params.get("event_type")) {
      results.replaceChildren(h("p.muted", "Type words to find in any event of your org: queries, prompts, answers, tool output."));
      return;
    }
    try {
      const page = await api("/v1/search", {
        params: {
          q: params.get("q"),
          event_type: params.get("event_type"),
          task_id: params.get("task_id"),
          from: params.get("from") ? new Date(params.get("from")).toISOString() : null,
          to: params.get("to") ? new Date(params.get("to")).toISOString() : null,
          size: 20,
          cursor: cursors[cursors.length - 1],
        },
      });
      results.replaceChildren(
        h("p.muted", `${page.total} matching event(s)`),
        h(
          "ol.hits",
          page.hits.map((hit) => {
            const href = `#/tasks/${encodeURIComponent(hit.task_id)}?seq=${hit.sequence ?? 0}`;
            return h(
              "li.hit",
              h(
                "a.hit-link",
                { href, dataset: { navItem: "", eventId: hit.event_id } },
                h("span.etype", hit.event_type),
                h("span.mono", ` task ${short(hit.task_id)} · #${hit.sequence ?? "?"} · ${fmtTime(hit.occurred_at)}`),
              ),
              Object.entries(hit.highlights).map(([name, fragments]) =>
                h("div.highlight", h("span.field", name.replace(/^payload\./, "")), fragments.map((f) => highlighted(f))),
              ),
            );
          }),
        ),
        h(
          "div.pager",
          h("button", { type: "button", disabled: cursors.length === 1, onclick: () => (cursors.pop(), run()) }, "← Previous"),
          h("button", { type: "button", disabled: !page.next_cursor, onclick: () => (cursors.push(page.next_cursor), run()) }, "Next →"),
        ),
      );
    } catch (error) {
      results.replaceChildren(errorBox(error));
    }
  }

  const form = h(
    "form.filters.search",
    {
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        const search = new URLSearchParams(
          Object.entries({ q: q.value.trim(), event_type: type.value, task_id: task.value.trim(), from: from.value, to: to.value }).filter(([, v]) => v),
        );
        navigate(`search?${search}`);
      },
    },
    q,
    type,
    task,
    h("label", "From ", from),
    h("label", "To ", to),
    h("button.primary", { type: "submit" }, "Search"),
  );
  root.append(h("h1", "Search"), form, results);
  run();
  if (!params.get("q")) q.focus();
}
