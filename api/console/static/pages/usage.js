// Usage: the org's tokens and cost per day and per model (GET /v1/usage) as charts, and how far
// each projection lags behind the log (GET /v1/status).
import { api, errorBox, fmtCost, fmtNumber, h } from "../lib.js";
import { barChart } from "../svg.js";

export function render({ root, identity, params, navigate }) {
  const today = new Date().toISOString().slice(0, 10);
  const monthAgo = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
  const first = params.get("from") || monthAgo;
  const last = params.get("to") || today;
  const from = h("input", { type: "date", value: first, "aria-label": "First day" });
  const to = h("input", { type: "date", value: last, "aria-label": "Last day" });
  const charts = h("div.charts");
  const table = h("div.table-wrap");
  const lag = h("section.card.lag", { "aria-label": "Projection lag" }, h("h2", "Projection and consumer lag"));

  async function load() {
    try {
      const range = { from: first, to: last };
      const [byDay, byModel, byUser] = await Promise.all([
        api("/v1/usage", { params: { ...range, group_by: "day" } }),
        api("/v1/usage", { params: { ...range, group_by: "model" } }),
        api("/v1/usage", { params: { ...range, group_by: ["day", "model"] } }),
      ]);
      charts.replaceChildren(
        h("figure.card", barChart(byDay.map((r) => ({ label: String(r.day).slice(5), value: r.total_tokens })), { title: "Tokens per day", format: (v) => fmtNumber(Math.round(v)) })),
        h("figure.card", barChart(byDay.map((r) => ({ label: String(r.day).slice(5), value: r.cost_usd })), { title: "Cost per day (USD)", format: (v) => `$${v.toFixed(4)}` })),
        h("figure.card", barChart(byModel.map((r) => ({ label: r.model || "?", value: r.total_tokens })), { title: "Tokens per model", format: (v) => fmtNumber(Math.round(v)) })),
        h("figure.card", barChart(byModel.map((r) => ({ label: r.model || "?", value: r.cost_usd })), { title: "Cost per model (USD)", format: (v) => `$${v.toFixed(4)}` })),
      );
      table.replaceChildren(
        h(
          "table.usage",
          h("caption", `Per day and model · org ${identity.org_id}`),
          h("thead", h("tr", ["Day", "Model", "Calls", "Prompt", "Completion", "Total", "Cost", "Cache hits"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            byUser.length
              ? byUser.map((r) =>
                  h("tr", h("td.mono", r.day), h("td", r.model), h("td.num", fmtNumber(r.calls)), h("td.num", fmtNumber(r.prompt_tokens)), h("td.num", fmtNumber(r.completion_tokens)), h("td.num", fmtNumber(r.total_tokens)), h("td.num", fmtCost(r.cost_usd)), h("td.num", `${Math.round(r.cache_hit_rate * 100)} %`)),
                )
              : h("tr", h("td.muted", { colSpan: 8 }, "No LLM calls in this range.")),
          ),
        ),
      );
    } catch (error) {
      charts.replaceChildren(errorBox(error));
    }
    try {
      const status = await api("/v1/status");
      lag.replaceChildren(
        h("h2", "Projection and consumer lag"),
        status.projectors
          ? h(
              "table.lag-table",
              h("thead", h("tr", ["Projector", "Events behind", "Seconds behind"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", status.projectors.map((p) => h("tr", h("td", p.projector), h("td.num", fmtNumber(p.events_behind)), h("td.num", p.seconds_behind === null ? "—" : p.seconds_behind.toFixed(2))))),
            )
          : h("p.error", `lag not measured: ${status.lag_error}`),
        h("p.muted", "Dependencies: ", status.dependencies.map((d) => h(`span.badge.${d.ok ? "ok" : "bad"}`, `${d.name} ${d.ok ? "ok" : "down"}`))),
      );
    } catch (error) {
      lag.append(errorBox(error));
    }
  }

  root.append(
    h("h1", "Usage"),
    h(
      "form.filters",
      { onsubmit: (e) => (e.preventDefault(), navigate(`usage?from=${from.value}&to=${to.value}`)) },
      h("label", "From ", from),
      h("label", "To ", to),
      h("button", { type: "submit" }, "Show"),
    ),
    charts,
    table,
    lag,
  );
  load();
}
