// Tasks: the org's tasks, filtered and cursor-paged, refreshed every few seconds; operators also
// get a form to submit one.
import { api, errorBox, fmtCost, fmtMs, fmtNumber, fmtTime, h, short, statusBadge } from "../lib.js";

const REFRESH_MS = 3000;
const STATUSES = ["", "submitted", "running", "completed", "failed", "cancelled", "rejected"];
const MODES = ["", "SIMPLE", "STANDARD", "COMPLEX"];

function localToIso(value) {
  return value ? new Date(value).toISOString() : null;
}

export function render({ root, identity, params, navigate }) {
  const filters = {
    status: params.get("status") || "",
    mode: params.get("mode") || "",
    from: params.get("from") || "",
    to: params.get("to") || "",
  };
  const cursors = [null]; // the cursor of each page shown so far: Previous pops one
  let timer = null;
  let stopped = false;

  const body = h("tbody");
  const pager = h("div.pager");
  const state = h("p.muted.live", { "aria-live": "polite" });
  const table = h(
    "table.tasks",
    h("caption.visually-hidden", "Tasks of your org, newest first"),
    h("thead", h("tr", ["Task", "Status", "Mode", "Query", "User", "Submitted", "Tokens", "Cost", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
    body,
  );

  function select(name, options, label) {
    return h(
      "label",
      label,
      h(
        "select",
        { name, onchange: (e) => apply(name, e.target.value) },
        options.map((o) => h("option", { value: o, selected: filters[name] === o }, o || "any")),
      ),
    );
  }
  function dateInput(name, label) {
    return h("label", label, h("input", { type: "datetime-local", name, value: filters[name], onchange: (e) => apply(name, e.target.value) }));
  }
  function apply(name, value) {
    filters[name] = value;
    const search = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    navigate(`tasks${search.toString() ? `?${search}` : ""}`);
  }

  async function load() {
    clearTimeout(timer);
    try {
      const page = await api("/v1/tasks", {
        params: {
          status: filters.status,
          mode: filters.mode,
          from: localToIso(filters.from),
          to: localToIso(filters.to),
          cursor: cursors[cursors.length - 1],
          limit: 20,
        },
      });
      if (stopped) return;
      const focusedId = document.activeElement?.dataset?.taskId;
      body.replaceChildren(
        ...page.tasks.map((t) => {
          const row = h(
            "tr",
            {
              tabIndex: 0,
              dataset: { navItem: "", taskId: t.task_id },
              onclick: () => navigate(`tasks/${encodeURIComponent(t.task_id)}`),
              onkeydown: (e) => e.key === "Enter" && navigate(`tasks/${encodeURIComponent(t.task_id)}`),
            },
            h("td", h("a.mono", { href: `#/tasks/${encodeURIComponent(t.task_id)}`, tabIndex: -1 }, short(t.task_id))),
            h("td", statusBadge(t.status)),
            h("td", t.execution_mode || "—"),
            h("td.query", { title: t.query || "" }, t.query || "—"),
            h("td", t.user_id),
            h("td.mono", fmtTime(t.submitted_at)),
            h("td.num", fmtNumber(t.total_tokens)),
            h("td.num", fmtCost(t.cost_usd)),
            h("td.num", fmtMs(t.duration_ms)),
          );
          return row;
        }),
      );
      if (!page.tasks.length) body.append(h("tr", h("td.muted", { colSpan: 9 }, "No tasks match.")));
      if (focusedId) body.querySelector(`[data-task-id="${CSS.escape(focusedId)}"]`)?.focus();
      pager.replaceChildren(
        h("button", { type: "button", disabled: cursors.length === 1, onclick: () => (cursors.pop(), load()) }, "← Newer"),
        h("span.muted", `page ${cursors.length}`),
        h("button", { type: "button", disabled: !page.next_cursor, onclick: () => (cursors.push(page.next_cursor), load()) }, "Older →"),
      );
      state.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (error) {
      state.replaceChildren(errorBox(error));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }

  let submitForm = null;
  if (identity.may.submit) {
    const query = h("textarea#task-query", { name: "query", rows: 2, required: true, maxLength: 32000, placeholder: "What is (17 + 25) * 3?" });
    const message = h("p.muted", { "aria-live": "polite" });
    submitForm = h(
      "form.card.submit",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const accepted = await api("/v1/tasks", { method: "POST", body: { query: query.value } });
            navigate(`tasks/${encodeURIComponent(accepted.task_id)}?after=${encodeURIComponent(accepted.position)}`);
          } catch (error) {
            message.replaceChildren(errorBox(error));
          }
        },
      },
      h("label", { for: "task-query" }, "New task"),
      query,
      h("div.row", h("button.primary#submit-task", { type: "submit" }, "Submit task"), message),
    );
  }

  root.append(
    h("h1", "Tasks"),
    submitForm || "",
    h(
      "form.filters",
      { onsubmit: (e) => e.preventDefault(), "aria-label": "Filters" },
      h("label", "Org", h("input", { value: identity.org_id, readOnly: true, "aria-readonly": "true", title: "Your key's org" })),
      select("status", STATUSES, "Status"),
      select("mode", MODES, "Mode"),
      dateInput("from", "From"),
      dateInput("to", "To"),
    ),
    h("div.table-wrap", table),
    pager,
    state,
  );
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
