// The task page: a live timeline (the task's events from the log over SSE), the subtask DAG, the
// LLM and tool calls, its approvals, and time travel (state at N, diff, fork from here).
import { api, errorBox, fmtCost, fmtMs, fmtNumber, fmtTime, h, pretty, readEventStream, short, statusBadge } from "../lib.js";
import { dagSvg } from "../svg.js";

const ENDED = new Set(["completed", "failed", "cancelled", "rejected"]);
const TERMINAL_EVENTS = new Set(["TaskCompleted", "TaskFailed", "TaskCancelled", "TaskRejected"]);

// One line per event, as `agentlog replay` says it (audit/timetravel.py _detail).
function detailOf(type, p) {
  switch (type) {
    case "TaskSubmitted":
      return p.query;
    case "TaskAccepted":
      return `${String(p.execution_mode).toLowerCase()} (complexity ${Number(p.complexity).toFixed(2)}) · ${p.model}`;
    case "LlmCallRequested":
      return `${p.model} · prompt of ${p.prompt_messages} messages, ${p.tools.length} tools`;
    case "LlmCallCompleted": {
      const calls = JSON.parse(p.tool_calls_json || "[]").map((c) => c.name);
      return `${p.cache_hit ? `[cache ${String(p.cache_kind).toLowerCase()}] ` : ""}${calls.length ? `tool calls ${calls.join(", ")}` : p.content || ""}`;
    }
    case "ToolCallRequested":
    case "ApprovalRequested":
      return `${p.tool} ${p.arguments_json}`;
    case "ToolCallAuthorized":
      return `${p.tool} allowed by ${p.rule}`;
    case "ToolCallDenied":
      return `${p.tool} denied by ${p.rule}: ${p.reason}`;
    case "ToolCallCompleted":
      return `${p.quarantined ? "[quarantined] " : ""}${p.output}`;
    case "ToolCallFailed":
    case "LlmCallFailed":
      return `${p.error_type}: ${p.error}`;
    case "ApprovalGranted":
    case "ApprovalRejected":
      return `${p.decided_by}: ${p.reason}`;
    case "PlanDecided":
      return (p.subtasks || []).map((s) => s.subtask_id).join(", ");
    case "SubtaskStarted":
      return `${p.subtask_id} started (agent ${p.agent_id})`;
    case "SubtaskCompleted":
      return `${p.subtask_id}: ${p.result}`;
    case "SubtaskFailed":
      return `${p.subtask_id}: ${p.error}`;
    case "TaskCompleted":
      return p.result;
    case "TaskFailed":
    case "TaskRejected":
      return `${p.reason}: ${p.error}`;
    case "TaskCancelled":
      return `cancelled by ${p.cancelled_by}: ${p.reason}`;
    case "TaskForked":
      return `fork of ${short(p.source_task_id)} at ${p.prefix_events}`;
    default:
      return "";
  }
}

// A request event records only the messages it added; the whole prompt is the agent's
// conversation in the state folded up to that request (its first `prompt_messages` messages).
function conversationText(messages) {
  return messages
    .map((raw) => {
      const m = typeof raw === "string" ? JSON.parse(raw) : raw;
      const calls = (m.tool_calls || []).map((c) => `  → ${c.function?.name}(${c.function?.arguments})`).join("\n");
      return `${m.role}${m.name ? ` (${m.name})` : ""}: ${m.content ?? ""}${calls ? `\n${calls}` : ""}`;
    })
    .join("\n\n");
}

function lazyPrompt(taskId, request, sequence) {
  const out = h("pre.prompt", "…");
  out.dataset.load = "1";
  out.load = async () => {
    if (!out.dataset.load) return;
    delete out.dataset.load;
    try {
      const answer = await api(`/v1/tasks/${encodeURIComponent(taskId)}/state`, { params: { at: sequence } });
      const agent = answer.state.agents?.[request.agent_id];
      const messages = agent ? agent.messages.slice(0, request.prompt_messages) : JSON.parse(request.messages_json);
      out.textContent = conversationText(messages);
    } catch (error) {
      out.replaceChildren(errorBox(error));
    }
  };
  return out;
}

// Fills the lazy prompts inside a <details> the first time it is opened.
function loadOnOpen(details) {
  details.addEventListener("toggle", () => {
    if (details.open) details.querySelectorAll("pre[data-load]").forEach((pre) => pre.load());
  });
  return details;
}

function field(label, value) {
  return [h("dt", label), h("dd", value ?? "—")];
}

// The expanded view of an event: an LLM call's figures, prompt and response; a tool call's
// arguments, output and policy decision; otherwise the payload.
function eventBody(type, p, taskId, sequence) {
  if (type === "LlmCallRequested") {
    return h(
      "div",
      h("dl.facts", field("model", p.model), field("provider", p.provider), field("tier", p.tier), field("step", p.step), field("agent", p.agent_id), field("attempt", p.attempt)),
      h("h4", `Prompt (${p.prompt_messages} messages)`),
      lazyPrompt(taskId, p, sequence),
    );
  }
  if (type === "LlmCallCompleted") {
    return h(
      "div",
      h(
        "dl.facts",
        field("model", p.model),
        field("tokens", `${fmtNumber(p.prompt_tokens)} in + ${fmtNumber(p.completion_tokens)} out = ${fmtNumber(p.total_tokens)}`),
        field("cost", fmtCost(p.cost_usd)),
        field("latency", fmtMs(p.latency_ms)),
        field("cache hit", p.cache_hit ? `yes (${p.cache_kind})` : "no"),
        field("finish", p.finish_reason),
      ),
      h("h4", "Response"),
      h("pre.response", p.content || pretty(p.tool_calls_json)),
    );
  }
  if (type.startsWith("ToolCall") || type === "ApprovalRequested") {
    return h(
      "div",
      h("dl.facts", field("tool", p.tool), field("rule", p.rule), field("decision", type === "ToolCallAuthorized" ? "allow" : type === "ToolCallDenied" ? "deny" : type === "ApprovalRequested" ? "approval required" : null), field("latency", p.latency_ms !== undefined ? fmtMs(p.latency_ms) : null)),
      p.arguments_json ? [h("h4", "Arguments"), h("pre", pretty(p.arguments_json))] : null,
      p.output !== undefined ? [h("h4", "Output"), h("pre", p.output)] : null,
      p.reason ? [h("h4", "Reason"), h("pre", p.reason)] : null,
      p.error ? [h("h4", "Error"), h("pre", p.error)] : null,
    );
  }
  return h("pre", pretty(p));
}

export function render({ root, identity, params, taskId, navigate }) {
  const controller = new AbortController();
  const events = [];
  const target = params.has("seq") ? Number(params.get("seq")) : null;
  let stopped = false;
  let refreshTimer = null;
  let view = null;

  const title = h("h1", "Task ", h("span.mono", short(taskId)));
  const summary = h("section.card.summary", { "aria-label": "Summary" }, h("p.muted", "Loading…"));
  const actions = h("div.actions");
  const liveState = h("span.muted.live", { "aria-live": "polite" }, "connecting…");
  const liveTokens = h("p.tokens.mono", { hidden: true, "aria-live": "off" });
  const timelineBody = h("tbody");
  const timeline = h(
    "section.card.timeline",
    { "aria-label": "Timeline" },
    h("div.section-head", h("h2", "Timeline"), liveState),
    liveTokens,
    h("div.table-wrap", h("table", h("thead", h("tr", ["#", "Event", "Time", "+ms", "Detail"].map((t) => h("th", { scope: "col" }, t)))), timelineBody)),
  );
  const dag = h("section.card.dag-card", { "aria-label": "Subtask graph" }, h("h2", "Subtasks"), h("p.muted", "Loading…"));
  const calls = h("section.card.calls", { "aria-label": "Calls" }, h("h2", "LLM and tool calls"));
  const approvals = h("section.card.task-approvals", { "aria-label": "Approvals" });

  // -- time travel ---------------------------------------------------------------------------
  const slider = h("input#tt-slider", { type: "range", min: 0, max: 0, value: 0, step: 1, "aria-label": "Event to travel to", disabled: true });
  const sliderLabel = h("output#tt-label", { for: "tt-slider" }, "—");
  const stateSummary = h("dl.facts#tt-facts");
  const statePanel = h("pre#tt-state.state", "Move the slider to see the task's state after an event.");
  const diffFrom = h("input#diff-from", { type: "number", min: 0, value: 0, "aria-label": "Diff from event" });
  const diffTo = h("input#diff-to", { type: "number", min: 0, value: 0, "aria-label": "Diff to event" });
  const diffOut = h("div#tt-diff");
  const forkOut = h("div#fork-out", { "aria-live": "polite" });
  let stateRequest = 0;
  let sliderTimer = null;

  async function showState(sequence) {
    const mine = ++stateRequest;
    const event = events[sequence];
    sliderLabel.textContent = `after event ${sequence}${event ? ` · ${event.event_type}` : ""}`;
    try {
      const answer = await api(`/v1/tasks/${encodeURIComponent(taskId)}/state`, { params: { at: sequence } });
      if (mine !== stateRequest) return;
      const s = answer.state;
      const agents = Object.values(s.agents || {});
      stateSummary.replaceChildren(
        ...field("status", h("span#tt-status", s.status)),
        ...field("sequence", answer.sequence),
        ...field("event", answer.event_type),
        ...field("at", fmtTime(answer.occurred_at)),
        ...field("LLM calls", s.llm_calls),
        ...field("tool calls", s.tool_calls),
        ...field("tokens", `${fmtNumber(s.prompt_tokens)} in + ${fmtNumber(s.completion_tokens)} out`),
        ...field("cost", fmtCost(s.cost_usd)),
        ...field("agents", agents.length ? agents.map((a) => `${a.agent_id} ${a.status} (step ${a.step}, ${a.messages.length} messages)`).join("; ") : "none yet"),
        ...field("plan", s.plan?.length ? s.plan.map((p) => p.subtask_id).join(", ") : "—"),
        ...field("result", s.result || s.error || "—"),
      );
      statePanel.textContent = JSON.stringify(s, null, 2);
      statePanel.dataset.sequence = String(answer.sequence);
      diffFrom.value = String(Math.max(0, sequence - 1));
      diffTo.value = String(sequence);
      showDiff();
    } catch (error) {
      statePanel.replaceChildren(errorBox(error));
    }
  }

  let diffRequest = 0;
  async function showDiff() {
    const mine = ++diffRequest;
    const from = Number(diffFrom.value);
    const to = Number(diffTo.value);
    try {
      const answer = await api(`/v1/tasks/${encodeURIComponent(taskId)}/diff`, { params: { from, to } });
      if (mine !== diffRequest) return; // a later diff was asked for meanwhile
      const rows = answer.changes.map((c) =>
        h("tr", h("td", h(`span.op.op-${c.op}`, c.op)), h("td.mono", c.path), h("td", c.before === null ? "" : h("pre.cell", pretty(c.before))), h("td", c.after === null ? "" : h("pre.cell", pretty(c.after)))),
      );
      diffOut.replaceChildren(
        h("p.muted", `${answer.changes.length} change(s) from event ${from} to ${to}`),
        h("div.table-wrap", rows.length ? h("table.diff", h("thead", h("tr", ["op", "path", "before", "after"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", rows)) : []),
      );
    } catch (error) {
      diffOut.replaceChildren(errorBox(error));
    }
  }

  slider.addEventListener("input", () => {
    clearTimeout(sliderTimer);
    const sequence = Number(slider.value);
    sliderLabel.textContent = `after event ${sequence}`;
    sliderTimer = setTimeout(() => showState(sequence), 120);
  });

  let forkControls = null;
  if (identity.may.fork) {
    const model = h("input#fork-model", { type: "text", placeholder: "same model", "aria-label": "Model for the fork (optional)" });
    forkControls = h(
      "div.fork",
      h("label", "Fork model ", model),
      h(
        "button#fork-here",
        {
          type: "button",
          onclick: async () => {
            const at = Number(slider.value) + 1; // copy events 0..N: the fork continues after N
            try {
              const body = { at, ...(model.value.trim() ? { model: model.value.trim() } : {}) };
              const fork = await api(`/v1/tasks/${encodeURIComponent(taskId)}/fork`, { method: "POST", body });
              forkOut.replaceChildren(
                h("p", "Fork started: ", h("a#fork-link", { href: `#/tasks/${encodeURIComponent(fork.task_id)}` }, short(fork.task_id)), " · ", h("a", { href: `#/compare?a=${encodeURIComponent(taskId)}&b=${encodeURIComponent(fork.task_id)}` }, "compare the two runs")),
              );
            } catch (error) {
              forkOut.replaceChildren(errorBox(error));
            }
          },
        },
        "Fork from here",
      ),
    );
  }

  const timeTravel = h(
    "section.card.time-travel",
    { "aria-label": "Time travel" },
    h("h2", "Time travel"),
    h("div.slider-row", slider, sliderLabel),
    h("div.tt-grid", h("div", h("h3", "State"), stateSummary, h("details.state-json", h("summary", "Whole state (JSON)"), statePanel)), h("div", h("h3", "Diff"), h("div.row", h("label", "from ", diffFrom), h("label", "to ", diffTo), h("button#diff-run", { type: "button", onclick: showDiff }, "Diff")), diffOut)),
    forkControls,
    forkOut,
  );

  // -- the rest of the page ------------------------------------------------------------------
  function addEvent(event) {
    if (events[event.sequence]) return;
    events[event.sequence] = event;
    const row = h(
      "tr",
      { id: `ev-${event.sequence}`, tabIndex: 0, dataset: { navItem: "", type: event.event_type }, class: `ev ev-${event.event_type}` },
      h("td.num", String(event.sequence)),
      h("td", h("span.etype", event.event_type)),
      h("td.mono", fmtTime(event.occurred_at).slice(11)),
      h("td.num", event.sequence > 0 && events[event.sequence - 1] ? String(Date.parse(event.occurred_at) - Date.parse(events[event.sequence - 1].occurred_at)) : ""),
      h("td", loadOnOpen(h("details", h("summary", detailOf(event.event_type, event.payload) || "—"), eventBody(event.event_type, event.payload, taskId, event.sequence)))),
    );
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target === row) row.querySelector("details").toggleAttribute("open");
    });
    const after = [...timelineBody.children].find((r) => Number(r.id.slice(3)) > event.sequence);
    timelineBody.insertBefore(row, after || null);
    slider.max = String(events.length - 1);
    slider.disabled = false;
    if (event.sequence === target) {
      row.classList.add("target");
      row.querySelector("details").open = true;
      row.scrollIntoView({ block: "center" });
      row.focus({ preventScroll: true });
    }
  }

  let after = params.get("after"); // a submission's position: the first read waits until it is projected
  async function refresh() {
    try {
      view = await api(`/v1/tasks/${encodeURIComponent(taskId)}`, { params: { expand: ["llm_calls", "tool_calls", "approvals"], after } });
      after = null;
    } catch (error) {
      if (error.status === 404) {
        summary.replaceChildren(h("p.muted", "Not projected yet…"));
        return;
      }
      summary.replaceChildren(errorBox(error));
      return;
    }
    if (stopped) return;
    title.replaceChildren("Task ", h("span.mono", short(taskId)), " ", statusBadge(view.status));
    summary.replaceChildren(
      h("dl.facts.wide", ...field("query", view.query), ...field(view.error ? "error" : "result", h("span#task-result", view.error || view.result || "—"))),
      h(
        "dl.facts",
        ...field("status", h("span#task-status", view.status)),
        ...field("mode", view.execution_mode),
        ...field("model", view.model),
        ...field("user", view.user_id),
        ...field("tokens", fmtNumber(view.total_tokens)),
        ...field("cost", fmtCost(view.cost_usd)),
        ...field("duration", fmtMs(view.duration_ms)),
        ...field("submitted", fmtTime(view.submitted_at)),
      ),
    );
    actions.replaceChildren();
    if (identity.may.submit && !ENDED.has(view.status)) {
      actions.append(
        h(
          "button.danger#cancel-task",
          {
            type: "button",
            onclick: async () => {
              const reason = prompt("Why cancel this task?");
              if (reason) await api(`/v1/tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST", body: { reason } }).catch((e) => actions.append(errorBox(e)));
            },
          },
          "Cancel task",
        ),
      );
    }
    renderCalls(view.expanded);
    renderApprovals(view.expanded.approvals || []);
  }

  function renderCalls(expanded) {
    // Re-rendered as the task goes on: what the user opened stays open.
    const opened = new Set([...calls.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const byKey = new Map(events.filter(Boolean).filter((e) => e.event_type === "LlmCallRequested").map((e) => [`${e.payload.idempotency_key}/${e.payload.attempt}`, e]));
    const answers = new Map(events.filter(Boolean).filter((e) => e.event_type === "LlmCallCompleted").map((e) => [`${e.payload.idempotency_key}/${e.payload.attempt}`, e.payload]));
    const llm = (expanded.llm_calls || []).map((c) => {
      const key = `${c.idempotency_key}/${c.attempt}`;
      return loadOnOpen(h(
        "details.call.llm-call",
        { dataset: { key: `llm/${key}` }, open: opened.has(`llm/${key}`) },
        h("summary", h("span.badge", "LLM"), ` step ${c.step} · ${c.agent_id} · ${c.model} · ${fmtNumber(c.total_tokens)} tok · ${fmtCost(c.cost_usd)} · ${fmtMs(c.latency_ms)}${c.cache_hit ? " · cache hit" : ""} · ${c.status}`),
        h("dl.facts", ...field("provider", c.provider), ...field("tier", c.tier), ...field("tokens", `${c.prompt_tokens} + ${c.completion_tokens}`), ...field("cache", c.cache_hit ? c.cache_kind : "miss"), ...field("finish", c.finish_reason), ...field("error", c.error)),
        h("h4", "Prompt"),
        byKey.has(key) ? lazyPrompt(taskId, byKey.get(key).payload, byKey.get(key).sequence) : h("pre.prompt", "—"),
        h("h4", "Response"),
        h("pre.response", answers.has(key) ? answers.get(key).content || pretty(answers.get(key).tool_calls_json) : "—"),
      ));
    });
    const tools = (expanded.tool_calls || []).map((c) =>
      h(
        "details.call.tool-call",
        { dataset: { key: `tool/${c.idempotency_key}` }, open: opened.has(`tool/${c.idempotency_key}`) },
        h("summary", h("span.badge", "tool"), ` ${c.tool} · ${c.decision || "undecided"}${c.rule ? ` (${c.rule})` : ""} · ${c.status} · ${fmtMs(c.latency_ms)}`),
        h("h4", "Arguments"),
        h("pre", pretty(c.arguments_json || "")),
        h("h4", "Policy decision"),
        h("p", `${c.decision || "—"} by ${c.rule || "—"}${c.denial_reason ? `: ${c.denial_reason}` : ""}${c.approval_id ? ` · approval ${short(c.approval_id)}` : ""}`),
        h("h4", "Output"),
        h("pre", c.output ?? c.error ?? "—"),
      ),
    );
    calls.replaceChildren(h("h2", "LLM and tool calls"), ...(llm.length || tools.length ? [...llm, ...tools] : [h("p.muted", "No calls yet.")]));
  }

  function renderApprovals(list) {
    if (!list.length) {
      approvals.replaceChildren();
      approvals.hidden = true;
      return;
    }
    approvals.hidden = false;
    approvals.replaceChildren(
      h("h2", "Approvals"),
      ...list.map((a) =>
        h(
          "div.approval",
          h("p", h("strong", a.tool), ` · ${a.status} · rule ${a.rule}`, a.decided_by ? ` · by ${a.decided_by}: ${a.decision_reason}` : ""),
          h("pre", pretty(a.arguments_json)),
          a.status === "pending" ? decisionForm(taskId, a.approval_id, identity, refresh) : null,
        ),
      ),
    );
  }

  async function refreshDag() {
    try {
      const tree = await api(`/v1/tasks/${encodeURIComponent(taskId)}/subtask-tree`);
      if (stopped) return;
      dag.replaceChildren(
        h("h2", "Subtasks"),
        ...(tree.subtasks.length
          ? [h("div.dag-wrap", dagSvg(tree)), h("ul.legend", ["pending", "running", "completed", "failed", "abandoned"].map((s) => h(`li.node-${s}`, s)))]
          : [h("p.muted", `No plan: a ${String(tree.mode || "simple").toLowerCase()} task runs one agent.`)]),
      );
    } catch (error) {
      if (error.status !== 404) dag.replaceChildren(h("h2", "Subtasks"), errorBox(error));
    }
  }

  function scheduleRefresh(delay = 400) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      refresh();
      refreshDag();
    }, delay);
  }

  async function stream() {
    let ended = false;
    while (!stopped && !ended) {
      try {
        liveState.textContent = "live";
        const last = events.length - 1;
        await readEventStream(
          `/v1/tasks/${encodeURIComponent(taskId)}/stream`,
          { after_sequence: last, max_seconds: 600 },
          (message) => {
            if (message.event === "token") {
              if (message.data.done) {
                liveTokens.hidden = true;
                liveTokens.textContent = "";
              } else {
                liveTokens.hidden = false;
                liveTokens.textContent += message.data.delta || "";
              }
              return;
            }
            if (message.event === "end") {
              ended = true;
              return;
            }
            addEvent(message.data);
            if (message.data.sequence === 0 || !slider.dataset.touched) {
              // Follow the newest event until the user moves the slider.
              slider.value = slider.max;
            }
            scheduleRefresh(TERMINAL_EVENTS.has(message.data.event_type) ? 0 : 400);
          },
          controller.signal,
        );
      } catch (error) {
        if (stopped) return;
        liveState.textContent = `stream interrupted (${error.message}); reconnecting…`;
        if (error.status === 404) await new Promise((r) => setTimeout(r, 1000)); // not projected yet
      }
      if (!ended && !stopped) await new Promise((r) => setTimeout(r, 1000));
    }
    if (ended) {
      liveState.textContent = `ended · ${events.length} events`;
      liveState.dataset.ended = "true";
      if (!slider.dataset.touched) showState(events.length - 1);
      // The log is ahead of the read models: refresh until they have every event of the task.
      for (let i = 0; i < 60 && !stopped; i += 1) {
        await refresh();
        await refreshDag();
        if (view && ENDED.has(view.status) && view.event_count >= events.length) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }
  slider.addEventListener("input", () => (slider.dataset.touched = "1"));

  root.append(
    h("p.crumbs", h("a", { href: "#/tasks" }, "← Tasks")),
    h("div.title-row", title, actions),
    summary,
    h("div.task-grid", timeline, h("div.side", dag, approvals, calls)),
    timeTravel,
  );
  refresh().then(() => {
    refreshDag();
    stream();
  });
  return () => {
    stopped = true;
    controller.abort();
    clearTimeout(refreshTimer);
    clearTimeout(sliderTimer);
  };
}

// Approve / reject with a reason: only rendered for roles that may decide (the API checks too).
export function decisionForm(taskId, approvalId, identity, after) {
  if (!identity.may.decide_approvals) return h("p.muted.no-decide", "Your role may not decide approvals.");
  const reason = h("input", { type: "text", name: "reason", required: true, maxLength: 2000, placeholder: "why", "aria-label": "Reason" });
  const out = h("span", { "aria-live": "polite" });
  const decide = (verb) => async () => {
    if (!reason.value.trim()) {
      reason.reportValidity();
      return;
    }
    try {
      await api(`/v1/tasks/${encodeURIComponent(taskId)}/approvals/${encodeURIComponent(approvalId)}/${verb}`, { method: "POST", body: { reason: reason.value.trim() } });
      out.textContent = verb === "approve" ? "Approved." : "Rejected.";
      form.querySelectorAll("button").forEach((b) => (b.disabled = true));
      setTimeout(after, 500);
    } catch (error) {
      out.replaceChildren(errorBox(error));
    }
  };
  const form = h(
    "form.decide",
    { onsubmit: (e) => e.preventDefault(), dataset: { approvalId } },
    reason,
    h("button.primary.approve", { type: "button", onclick: decide("approve") }, "Approve"),
    h("button.danger.reject", { type: "button", onclick: decide("reject") }, "Reject"),
    out,
  );
  return form;
}
