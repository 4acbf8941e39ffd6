// The console's shell: login with an API key, the caller's identity (GET /v1/whoami), hash routing
// between the pages, and the global keyboard shortcuts.
import { api, errorBox, h, storeKey, storedKey } from "./lib.js";
import * as approvals from "./pages/approvals.js";
import * as compare from "./pages/compare.js";
import * as search from "./pages/search.js";
import * as task from "./pages/task.js";
import * as tasks from "./pages/tasks.js";
import * as usage from "./pages/usage.js";

const NAV = [
  ["tasks", "Tasks", "g t"],
  ["search", "Search", "/"],
  ["approvals", "Approvals", "g a"],
  ["usage", "Usage", "g u"],
];

const main = document.getElementById("main");
const header = document.getElementById("header");
let identity = null;
let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search) };
}

export function navigate(path) {
  location.hash = `#/${path}`;
}

function renderHeader(active) {
  header.replaceChildren(
    h("a.brand", { href: "#/tasks" }, "agentlog"),
    h(
      "nav",
      { "aria-label": "Main" },
      NAV.map(([id, label, key]) =>
        h(`a.nav-${id}`, { href: `#/${id}`, "aria-current": active === id ? "page" : null, title: `${label} (${key})` }, label),
      ),
    ),
    h(
      "div.who",
      h("span.org", { title: "Your org: the console shows nothing else" }, identity.org_id),
      h("span.user", identity.user_id),
      h(`span.badge.role.role-${identity.role}`, identity.role),
      h("button.link#logout", { type: "button", onclick: logout }, "Log out"),
    ),
  );
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  if (!identity) return;
  const { parts, params } = parseHash();
  const page = parts[0] || "tasks";
  renderHeader(page === "compare" ? "tasks" : page);
  main.replaceChildren();
  const ctx = { root: main, identity, params, navigate };
  try {
    if (page === "tasks" && parts[1]) cleanup = task.render({ ...ctx, taskId: parts[1] });
    else if (page === "tasks") cleanup = tasks.render(ctx);
    else if (page === "search") cleanup = search.render(ctx);
    else if (page === "approvals") cleanup = approvals.render(ctx);
    else if (page === "usage") cleanup = usage.render(ctx);
    else if (page === "compare") cleanup = compare.render(ctx);
    else main.append(h("h1", "Not found"), h("p", h("a", { href: "#/tasks" }, "Back to the tasks")));
  } catch (error) {
    main.append(errorBox(error));
  }
  const heading = main.querySelector("h1");
  if (heading && !main.contains(document.activeElement)) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

function showLogin(message) {
  if (cleanup) cleanup();
  cleanup = null;
  identity = null;
  header.replaceChildren(h("span.brand", "agentlog"));
  const input = h("input#api-key", {
    type: "password",
    name: "api-key",
    autocomplete: "off",
    required: true,
    placeholder: "alk_…",
    "aria-describedby": "login-help",
  });
  const form = h(
    "form.login.card",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        storeKey(input.value.trim());
        await start();
      },
    },
    h("h1", "Sign in"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p#login-help.muted",
      "Create one with ",
      h("code", "agentlog keys create --org ORG --user YOU --role operator"),
      ". It is kept in this tab only (sessionStorage).",
    ),
    message ? h("p.error", { role: "alert" }, message) : null,
    h("button.primary", { type: "submit" }, "Sign in"),
  );
  main.replaceChildren(form);
  input.focus();
}

function logout() {
  storeKey(null);
  showLogin();
}

async function start() {
  if (!storedKey()) return showLogin();
  try {
    identity = await api("/v1/whoami");
  } catch (error) {
    storeKey(null);
    return showLogin(error.status === 401 ? "That key was not accepted." : error.message);
  }
  document.body.dataset.role = identity.role;
  if (!location.hash || location.hash === "#" || location.hash === "#/") navigate("tasks");
  else route();
}

// Keyboard: "/" search, "g" then t/a/u/s to go to a page, "?" for help; j/k inside lists (pages).
let pendingG = false;
document.addEventListener("keydown", (event) => {
  if (!identity || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.key === "/") {
    event.preventDefault();
    const box = document.getElementById("search-q");
    if (box) box.focus();
    else navigate("search");
    return;
  }
  if (event.key === "?") {
    document.getElementById("shortcuts").toggleAttribute("hidden");
    return;
  }
  if (pendingG) {
    pendingG = false;
    const target = { t: "tasks", a: "approvals", u: "usage", s: "search" }[event.key];
    if (target) navigate(target);
    return;
  }
  if (event.key === "g") pendingG = true;
});

// j/k move between the rows of the list on the page (any element with data-nav-item), Enter opens.
document.addEventListener("keydown", (event) => {
  if (!identity || event.target.closest("input, textarea, select")) return;
  if (event.key !== "j" && event.key !== "k") return;
  const items = [...main.querySelectorAll("[data-nav-item]")];
  if (!items.length) return;
  const index = items.indexOf(document.activeElement.closest("[data-nav-item]"));
  const next = event.key === "j" ? Math.min(index + 1, items.length - 1) : Math.max(index - 1, 0);
  items[index < 0 ? 0 : next].focus();
  event.preventDefault();
});

document.addEventListener("console:unauthorized", () => {
  storeKey(null);
  showLogin("Your key is no longer accepted; sign in again.");
});
window.addEventListener("hashchange", route);
start();
