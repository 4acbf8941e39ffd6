// Two runs side by side (GET /v1/compare): totals, results, and the events aligned by sequence
// with the first difference marked.
import { api, errorBox, fmtCost, fmtNumber, h, short } from "../lib.js";

function summaryCard(label, run) {
  return h(
    "section.card.run",
    h("h2", `${label}: `, h("a.mono", { href: `#/tasks/${encodeURIComponent(run.task_id)}` }, short(run.task_id))),
    h(
      "dl.facts",
      ...[
        ["status", run.status],
        ["events", run.events],
        ["LLM calls", run.llm_calls],
        ["tool calls", run.tool_calls],
        ["tokens", fmtNumber(run.total_tokens)],
        ["cost", fmtCost(run.cost_usd)],
        ["models", run.models.join(", ") || "—"],
        ["result", run.result || run.error || "—"],
      ].flatMap(([k, v]) => [h("dt", k), h("dd", String(v))]),
    ),
  );
}

export function render({ root, params, navigate }) {
  const a = h("input", { type: "text", value: params.get("a") || "", "aria-label": "First task id", placeholder: "task id" });
  const b = h("input", { type: "text", value: params.get("b") || "", "aria-label": "Second task id", placeholder: "task id" });
  const out = h("div#compare-out");
  root.append(
    h("h1", "Compare runs"),
    h("form.filters", { onsubmit: (e) => (e.preventDefault(), navigate(`compare?a=${encodeURIComponent(a.value.trim())}&b=${encodeURIComponent(b.value.trim())}`)) }, a, b, h("button.primary", { type: "submit" }, "Compare")),
    out,
  );
  if (!params.get("a") || !params.get("b")) return;
  out.replaceChildren(h("p.muted", "Reading both runs from the log…"));
  api("/v1/compare", { params: { a: params.get("a"), b: params.get("b") } })
    .then((c) => {
      out.replaceChildren(
        h("p.notice", c.branch, c.first_difference === null ? " · no difference" : ` · first difference at event ${c.first_difference}`),
        h("div.compare-grid", summaryCard("A", c.a), summaryCard("B", c.b)),
        h(
          "div.table-wrap",
          h(
            "table.compare",
            h("thead", h("tr", ["#", "A", "B"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              c.rows.map((r) =>
                h(
                  `tr.${r.same ? "same" : "differs"}`,
                  h("td.num", String(r.sequence)),
                  h("td", h("span.etype", r.a_type || "—"), h("div.muted", r.a_detail || "")),
                  h("td", h("span.etype", r.b_type || "—"), h("div.muted", r.b_detail || "")),
                ),
              ),
            ),
          ),
        ),
      );
    })
    .catch((error) => out.replaceChildren(errorBox(error)));
}
