// Approvals: the org's tool calls waiting for a human, with the tool, its arguments and who asked;
// operators approve or reject with a reason.
import { api, errorBox, fmtTime, h, pretty, short } from "../lib.js";
import { decisionForm } from "./task.js";

const REFRESH_MS = 4000;

export function render({ root, identity }) {
  const list = h("div#approval-list", { "aria-live": "polite" });
  let timer = null;
  let stopped = false;
  const requesters = new Map();

  async function load() {
    clearTimeout(timer);
    if (list.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
      timer = setTimeout(load, REFRESH_MS); // do not replace a form someone is typing in
      return;
    }
    try {
      const pending = await api("/v1/approvals");
      for (const a of pending) {
        if (!requesters.has(a.task_id)) {
          requesters.set(a.task_id, await api(`/v1/tasks/${encodeURIComponent(a.task_id)}`).then((t) => t.user_id).catch(() => "?"));
        }
      }
      if (stopped) return;
      list.replaceChildren(
        ...(pending.length
          ? pending.map((a) =>
              h(
                "article.card.approval",
                { tabIndex: 0, dataset: { navItem: "", approvalId: a.approval_id } },
                h("h2", h("span.tool", a.tool), " ", h("span.muted", `rule ${a.rule}`)),
                h(
                  "dl.facts",
                  h("dt", "requested by"), h("dd.requester", requesters.get(a.task_id)),
                  h("dt", "task"), h("dd", h("a.mono", { href: `#/tasks/${encodeURIComponent(a.task_id)}` }, short(a.task_id))),
                  h("dt", "agent"), h("dd", a.agent_id || "main"),
                  h("dt", "asked at"), h("dd", fmtTime(a.requested_at)),
                  h("dt", "why"), h("dd", a.reason || "—"),
                ),
                h("h3", "Arguments"),
                h("pre.arguments", pretty(a.arguments_json || "")),
                decisionForm(a.task_id, a.approval_id, identity, load),
              ),
            )
          : [h("p.muted.empty", "No tool call is waiting for a decision.")]),
      );
    } catch (error) {
      list.replaceChildren(errorBox(error));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }

  root.append(h("h1", "Approvals"), identity.may.decide_approvals ? "" : h("p.notice", `As a ${identity.role} you can see approvals but not decide them.`), list);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
