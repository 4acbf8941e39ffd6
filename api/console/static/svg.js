// Hand-written SVG: the subtask DAG (a layered layout) and bar charts. No chart library.
import { svg } from "./lib.js";

const NODE_W = 170;
const NODE_H = 52;
const GAP_X = 60;
const GAP_Y = 18;

// Layer = the longest chain of dependencies above a node, so every edge points to the right.
export function dagSvg(tree) {
  const nodes = tree.subtasks;
  const byId = new Map(nodes.map((n) => [n.subtask_id, n]));
  const layer = new Map();
  const depth = (node, seen = new Set()) => {
    if (layer.has(node.subtask_id)) return layer.get(node.subtask_id);
    if (seen.has(node.subtask_id)) return 0;
    seen.add(node.subtask_id);
    const value = Math.max(-1, ...node.depends_on.filter((d) => byId.has(d)).map((d) => depth(byId.get(d), seen))) + 1;
    layer.set(node.subtask_id, value);
    return value;
  };
  nodes.forEach((n) => depth(n));
  const columns = [];
  for (const node of nodes) (columns[layer.get(node.subtask_id)] ||= []).push(node);
  const rows = Math.max(...columns.map((c) => c.length));
  const width = columns.length * (NODE_W + GAP_X) - GAP_X + 20;
  const height = rows * (NODE_H + GAP_Y) - GAP_Y + 20;
  const at = new Map();
  columns.forEach((column, x) => {
    const offset = ((rows - column.length) * (NODE_H + GAP_Y)) / 2;
    column.forEach((node, y) => at.set(node.subtask_id, { x: 10 + x * (NODE_W + GAP_X), y: 10 + offset + y * (NODE_H + GAP_Y) }));
  });
  const edges = [];
  for (const node of nodes) {
    for (const dep of node.depends_on) {
      if (!at.has(dep)) continue;
      const a = at.get(dep);
      const b = at.get(node.subtask_id);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.push(svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    }
  }
  const boxes = nodes.map((node) => {
    const { x, y } = at.get(node.subtask_id);
    const label = node.description.length > 24 ? `${node.description.slice(0, 23)}…` : node.description;
    return svg(
      "g",
      { class: `node node-${node.status}`, transform: `translate(${x},${y})`, tabindex: 0, role: "img", "aria-label": `${node.subtask_id} ${node.status}: ${node.description}`, "data-subtask": node.subtask_id },
      svg("title", {}, `${node.subtask_id} (${node.status}) ${node.description}${node.result ? ` → ${node.result}` : ""}${node.error ? ` ✗ ${node.error}` : ""}`),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
      svg("text", { x: 10, y: 20, class: "node-id" }, `${node.subtask_id} · ${node.status}`),
      svg("text", { x: 10, y: 38, class: "node-desc" }, label),
    );
  });
  return svg(
    "svg",
    { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Subtask graph" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
    ...edges,
    ...boxes,
  );
}

// A vertical bar chart: one bar per {label, value}; values formatted by `format`.
export function barChart(items, { title, format = String, width = 560, height = 220 } = {}) {
  const pad = { left: 64, right: 12, top: 24, bottom: 52 };
  const max = Math.max(0, ...items.map((i) => i.value)) || 1;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(items.length, 1);
  const barW = Math.max(4, Math.min(48, step * 0.7));
  const parts = [svg("text", { x: pad.left, y: 16, class: "chart-title" }, title || "")];
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    parts.push(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    parts.push(svg("text", { x: pad.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, format((max * i) / 4)));
  }
  items.forEach((item, i) => {
    const barH = (item.value / max) * plotH;
    const x = pad.left + i * step + (step - barW) / 2;
    parts.push(
      svg(
        "rect",
        { x, y: pad.top + plotH - barH, width: barW, height: Math.max(barH, item.value ? 1 : 0), class: `bar bar-${i % 6}` },
        svg("title", {}, `${item.label}: ${format(item.value)}`),
      ),
    );
    const label = item.label.length > 14 ? `${item.label.slice(0, 13)}…` : item.label;
    parts.push(svg("text", { x: x + barW / 2, y: height - pad.bottom + 16, class: "axis", "text-anchor": "middle" }, label));
  });
  if (!items.length) parts.push(svg("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "no usage in this range"));
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title }, ...parts);
}
