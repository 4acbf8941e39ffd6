"""The web console end to end: Debian's chromium (headless, driven by Playwright) against a real
platform whose only fake is the scripted LLM. An operator opens the console with an API key,
submits a task and watches it complete in the live timeline, travels through its history, forks it
and compares the runs, searches for a word of the model's answer and lands on that event, approves
a waiting tool call and sees the task go on; a viewer's key sees no approve button. Every request
the page makes goes to the API's own origin (the CSP forbids anything else, and this checks it).

Screenshots of each page go to ``test-artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from streams.settings import Settings
from tests.fixtures.platform import ScriptedPlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import TASK_TIMEOUT
from tests.integration.test_produce import AGENTLOG, run_cli

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = int(TASK_TIMEOUT * 1000)
# A word no other text of the platform contains: what the search must find.
ANSWER_WORD = "zanzibarite"
# Reads from the log (time travel, compare) take a few seconds on a busy 2-core machine.
expect.set_options(timeout=20_000)


def _base(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def _create_key(settings: Settings, org: str, user: str, role: str) -> str:
    done = subprocess.run(
        [str(AGENTLOG), "keys", "create", "--org", org, "--user", user, "--role", role, "--json"],
        env={**os.environ, "AGENTLOG_POSTGRES_DSN": settings.postgres_dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["token"])


@dataclass
class Console:
    """The platform, this module's org (so the console shows only this run's tasks) and its keys."""

    platform: ScriptedPlatform
    org: str
    operator_key: str
    viewer_key: str
    base: str
    tasks: dict[str, str] = field(default_factory=dict)  # what earlier tests left for later ones

    def script(self, *steps: Step) -> str:
        name = f"c-{uuid.uuid4().hex[:10]}"
        self.platform.llm.scripts[name] = list(steps)
        return name


@pytest.fixture(scope="module")
def console(scripted_platform: ScriptedPlatform) -> Console:
    settings = scripted_platform.settings
    org = f"console-{uuid.uuid4().hex[:8]}"
    return Console(
        platform=scripted_platform,
        org=org,
        operator_key=_create_key(settings, org, "olivia", "operator"),
        viewer_key=_create_key(settings, org, "victor", "viewer"),
        base=_base(settings),
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's chromium, never a downloaded browser; fail loudly when it is missing (make up installs it).
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make up` installs Debian's chromium"
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    yield browser
    browser.close()


@dataclass
class Session:
    """One signed-in browser tab, with every request it made and every error the page reported."""

    page: Page
    context: BrowserContext
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _open(browser: Browser, console: Console, key: str, viewport: dict[str, int] = DESKTOP) -> Session:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    session = Session(page=page, context=context)
    page.on("request", lambda request: session.requests.append(request.url))
    page.on("pageerror", lambda error: session.errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            session.errors.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    page.goto(f"{console.base}/console/")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator(".who .org")).to_have_text(console.org)
    return session


def _same_origin(url: str, console: Console) -> bool:
    return url.startswith(f"{console.base}/") or url.startswith("data:")


def _close(session: Session, console: Console) -> None:
    """Every request went to the API's origin, and the page reported no error (a CSP violation is one)."""
    foreign = [url for url in session.requests if not _same_origin(url, console)]
    session.context.close()
    assert session.requests, "the page made no request at all"
    assert not foreign, f"requests outside the API's origin: {foreign}"
    # A 403/404 the console expects is logged by chromium as a failed resource; nothing else may be.
    unexpected = [e for e in session.errors if "status of 40" not in e]
    assert not unexpected, unexpected


@pytest.fixture
def operator(browser: Browser, console: Console) -> Iterator[Session]:
    session = _open(browser, console, console.operator_key)
    yield session
    _close(session, console)


@pytest.fixture
def viewer(browser: Browser, console: Console) -> Iterator[Session]:
    session = _open(browser, console, console.viewer_key)
    yield session
    _close(session, console)


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _submit_in_console(page: Page, query: str) -> str:
    page.click(".top nav a.nav-tasks")
    page.fill("#task-query", query)
    page.click("#submit-task")
    page.wait_for_url(re.compile(r"#/tasks/[^/?]+\?after="))
    return page.url.rsplit("/", 1)[-1].split("?")[0]


def _wait_ended(page: Page, status: str = "completed") -> None:
    expect(page.locator(".timeline .live")).to_have_attribute("data-ended", "true", timeout=WAIT_MS)
    expect(page.locator("#task-status")).to_have_text(status, timeout=WAIT_MS)


def _state_sequence(page: Page) -> int:
    return int(page.locator("#tt-state").get_attribute("data-sequence") or "-1")


# -- the tests, in the order an operator works -----------------------------------------------------


def test_an_operator_submits_a_task_and_watches_it_complete_in_the_live_timeline(
    console: Console, operator: Session
) -> None:
    page = operator.page
    expect(page.locator("h1")).to_have_text("Tasks")
    script = console.script(
        Step(tool_calls=(("calculator", {"expression": "6 * 7"}),)),
        Step(content=f"The answer is 42, says the {ANSWER_WORD} oracle."),
    )
    task_id = _submit_in_console(page, f"Scripted task [[{script}]] What is 6 * 7?")
    console.tasks["answered"] = task_id
    # The events stream in over SSE: the first ones, then the calls, then the end.
    expect(page.locator("#ev-0 .etype")).to_have_text("TaskSubmitted")
    _wait_ended(page)
    types = page.locator(".timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert types[0] == "TaskSubmitted" and types[-1] == "TaskCompleted", types
    assert {"LlmCallRequested", "LlmCallCompleted", "ToolCallAuthorized", "ToolCallCompleted"} <= set(types)
    expect(page.locator("#task-result")).to_contain_text(ANSWER_WORD)
    # The timeline is the log's, row for row (what `agentlog replay` shows).
    replay = httpx.get(
        f"{console.base}/v1/tasks/{task_id}/timeline",
        headers={"Authorization": f"Bearer {console.operator_key}"},
        timeout=30,
    ).json()["rows"]
    assert types == [row["event_type"] for row in replay]
    # An LLM call expands to its model, tokens, cost, latency, cache hit, prompt and response.
    llm = page.locator("details.llm-call").last
    llm.locator("summary").click()
    expect(llm).to_contain_text("scripted-model")
    expect(llm.locator("pre.response")).to_contain_text(ANSWER_WORD)
    expect(llm.locator("pre.prompt")).to_contain_text("What is 6 * 7?")
    expect(llm).to_contain_text("cache")
    # A tool call expands to its arguments, output and policy decision.
    tool = page.locator("details.tool-call").first
    tool.locator("summary").click()
    expect(tool).to_contain_text("6 * 7")
    expect(tool).to_contain_text("allow")
    expect(tool.locator("pre").last).to_have_text(re.compile(r"42"))
    expect(page.locator(".dag-card")).to_contain_text("No plan")
    _shot(page, "task-page")
    # The list shows it, filtered by status, and j/Enter open it from the keyboard.
    page.click(".top nav a.nav-tasks")
    page.select_option("select[name=status]", "completed")
    row = page.locator(f"tr[data-task-id='{task_id}']")
    expect(row).to_be_visible()
    _shot(page, "tasks-list-filtered")
    page.locator("body").press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#/tasks/"))


def test_the_time_travel_slider_shows_the_state_at_each_event_and_the_diff(
    console: Console, operator: Session
) -> None:
    page = operator.page
    task_id = console.tasks["answered"]
    page.goto(f"{console.base}/console/#/tasks/{task_id}")
    _wait_ended(page)
    slider = page.locator("#tt-slider")
    last = int(slider.get_attribute("max") or "0")
    assert last >= 6
    expect(page.locator("#tt-state")).to_have_attribute("data-sequence", str(last))
    expect(page.locator("#tt-facts")).to_contain_text("completed")
    # Keyboard on the slider: Home travels to the first event, the task not yet completed.
    slider.focus()
    page.keyboard.press("Home")
    expect(page.locator("#tt-state")).to_have_attribute("data-sequence", "0")
    expect(page.locator("#tt-label")).to_contain_text("TaskSubmitted")
    expect(page.locator("#tt-facts")).not_to_contain_text("completed")
    at_start = page.locator("#tt-state").text_content()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tt-state")).to_have_attribute("data-sequence", "1")
    assert page.locator("#tt-state").text_content() != at_start
    # The diff between the two points is what changed in between.
    expect(page.locator("#tt-diff")).to_contain_text("/sequence")
    page.fill("#diff-from", "0")
    page.fill("#diff-to", str(last))
    page.click("#diff-run")
    expect(page.locator("#tt-diff")).to_contain_text(f"from event 0 to {last}")
    expect(page.locator("#tt-diff table.diff")).to_contain_text("/status")
    page.keyboard.press("End")  # nothing focused in the slider now: End scrolls, so drive it again
    slider.focus()
    page.keyboard.press("End")
    expect(page.locator("#tt-state")).to_have_attribute("data-sequence", str(last))
    expect(page.locator("#tt-diff")).to_contain_text(f"from event {last - 1} to {last}")
    page.locator(".time-travel").scroll_into_view_if_needed()
    _shot(page, "time-travel")


def test_fork_from_here_starts_a_fork_and_the_two_runs_compare_side_by_side(
    console: Console, operator: Session
) -> None:
    page = operator.page
    task_id = console.tasks["answered"]
    page.goto(f"{console.base}/console/#/tasks/{task_id}")
    _wait_ended(page)
    types = page.locator(".timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    # Fork after the last model request: the fork makes that call again and goes on live.
    requested = max(i for i, t in enumerate(types) if t == "LlmCallRequested")
    slider = page.locator("#tt-slider")
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(requested):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#tt-state")).to_have_attribute("data-sequence", str(requested))
    page.click("#fork-here")
    page.click("#fork-link")
    page.wait_for_url(re.compile(r"#/tasks/[^/?]+$"))
    fork_id = page.url.rsplit("/", 1)[-1]
    assert fork_id != task_id
    _wait_ended(page)
    expect(page.locator(f"#ev-{requested + 1} .etype")).to_have_text("TaskForked")
    page.goto(f"{console.base}/console/#/compare?a={task_id}&b={fork_id}")
    expect(page.locator("#compare-out .notice")).to_contain_text(f"is a fork of {task_id} at {requested + 1}")
    expect(page.locator("table.compare tr.differs").first).to_be_visible()
    _shot(page, "compare")


def test_search_finds_a_word_of_the_llm_response_and_lands_on_the_event(
    console: Console, operator: Session
) -> None:
    page = operator.page
    task_id = console.tasks["answered"]
    page.locator("body").press("/")  # the keyboard shortcut opens the search
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.type(ANSWER_WORD)
    page.keyboard.press("Enter")
    hit = page.locator(".hit", has=page.locator(f"a[href^='#/tasks/{task_id}?seq=']")).filter(
        has=page.locator(".etype", has_text="LlmCallCompleted")
    )
    # The audit index lags the log by up to a refresh: search again until the hit is there.
    for _ in range(20):
        if hit.count():
            break
        page.wait_for_timeout(500)
        page.click("form.search button[type=submit]")
        page.wait_for_timeout(500)
    expect(hit.first).to_be_visible()
    expect(hit.first.locator("mark").first).to_have_text(re.compile(ANSWER_WORD, re.IGNORECASE))
    _shot(page, "search")
    href = hit.first.locator("a.hit-link").get_attribute("href") or ""
    sequence = int(href.rsplit("=", 1)[-1])
    hit.first.locator("a.hit-link").click()
    target = page.locator(f"#ev-{sequence}")
    expect(target).to_have_class(re.compile(r"\btarget\b"))
    expect(target).to_be_focused()
    expect(target).to_be_in_viewport()
    expect(target.locator(".etype")).to_have_text("LlmCallCompleted")
    expect(target.locator("pre.response")).to_contain_text(ANSWER_WORD)


def _task_waiting_for_approval(console: Console) -> str:
    """A task a viewer submitted through Kafka (the REST API lets only operators submit): the
    policy makes a viewer's python call wait for a human (docs/policy.md)."""
    script = console.script(Step(tool_calls=(("python", {"code": "print(6 * 7)"}),)), Step(content="done"))
    task_id = str(uuid.uuid4())
    data = {
        "query": f"Scripted task [[{script}]] run some python",
        "user_role": "viewer",
        "envelope": {"task_id": task_id, "org_id": console.org, "user_id": "victor"},
    }
    produced = run_cli(console.platform.settings, "TaskSubmitted", "--data", json.dumps(data))
    assert produced.returncode == 0, produced.stdout + produced.stderr
    return task_id


def test_a_viewer_sees_the_waiting_approval_but_no_approve_button(console: Console, viewer: Session) -> None:
    page = viewer.page
    task_id = _task_waiting_for_approval(console)
    console.tasks["waiting"] = task_id
    expect(page.locator(".role")).to_have_text("viewer")
    expect(page.locator("#submit-task")).to_have_count(0)  # viewers may not submit either
    page.click(".top nav a.nav-approvals")
    card = page.locator("article.approval", has=page.locator(f"a[href='#/tasks/{task_id}']"))
    expect(card).to_be_visible()
    expect(card.locator(".tool")).to_have_text("python")
    expect(card.locator("pre.arguments")).to_contain_text("print(6 * 7)")
    expect(card.locator(".requester")).to_have_text("victor")
    expect(card.locator("button.approve")).to_have_count(0)
    expect(card.locator("button.reject")).to_have_count(0)
    expect(card.locator(".no-decide")).to_be_visible()
    _shot(page, "approvals-viewer")
    page.goto(f"{console.base}/console/#/tasks/{task_id}")
    expect(page.locator(".task-approvals")).to_contain_text("pending")
    expect(page.locator("#fork-here")).to_have_count(0)
    expect(page.locator("#cancel-task")).to_have_count(0)
    expect(page.locator(".task-approvals button.approve")).to_have_count(0)


def test_an_operator_approves_the_waiting_tool_call_and_the_task_goes_on(
    console: Console, operator: Session
) -> None:
    page = operator.page
    task_id = console.tasks["waiting"]
    page.click(".top nav a.nav-approvals")
    card = page.locator("article.approval", has=page.locator(f"a[href='#/tasks/{task_id}']"))
    expect(card.locator("button.approve")).to_be_visible()
    _shot(page, "approvals")
    card.locator("input[name=reason]").fill("checked the code")
    card.locator("button.approve").click()
    expect(card).to_contain_text("Approved.")
    page.goto(f"{console.base}/console/#/tasks/{task_id}")
    _wait_ended(page)
    types = page.locator(".timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    granted = types.index("ApprovalGranted")
    assert types.index("ApprovalRequested") < granted < types.index("ToolCallCompleted"), types
    expect(page.locator(".task-approvals")).to_contain_text("by olivia: checked the code")


def test_a_planned_task_shows_its_subtask_graph(console: Console, operator: Session) -> None:
    page = operator.page
    part = console.script(Step(content="a part done"))
    plan = {
        "subtasks": [
            {"id": "s1", "description": f"Compute 12 * 7 [[{part}]]", "depends_on": []},
            {"id": "s2", "description": f"Compute 100 / 4 [[{part}]]", "depends_on": []},
            {"id": "s3", "description": f"Summarise both [[{part}]]", "depends_on": ["s1", "s2"]},
        ],
        "rationale": "two lookups, then a summary",
    }
    script = console.script(Step(content=json.dumps(plan)), Step(content="84 and 25"))
    task_id = _submit_in_console(
        page, f"Scripted task [[{script}]] What is 12 * 7? What is 100 / 4? Then summarise both results."
    )
    _wait_ended(page)
    nodes = page.locator("svg.dag g.node")
    expect(nodes).to_have_count(3)
    expect(page.locator("svg.dag g.node-completed")).to_have_count(3)
    expect(page.locator("svg.dag path.edge")).to_have_count(2)
    assert task_id
    _shot(page, "task-dag")


def test_the_task_list_updates_live(console: Console, operator: Session) -> None:
    page = operator.page
    expect(page.locator("table.tasks tbody tr[data-task-id]").first).to_be_visible()
    before = page.locator("table.tasks tbody tr[data-task-id]").count()
    assert before >= 4  # the answered task, its fork, the approved one, the planned one
    script = console.script(Step(content="hi"))
    headers = {"Authorization": f"Bearer {console.operator_key}"}
    with httpx.Client(base_url=console.base, headers=headers) as api:
        reply = api.post("/v1/tasks", json={"query": f"Scripted task [[{script}]]"})
    assert reply.status_code == 202, reply.text
    # No reload: the list refreshes itself and the new task appears at the top.
    expect(page.locator("table.tasks tbody tr[data-task-id]").first).to_have_attribute(
        "data-task-id", reply.json()["task_id"]
    )
    expect(page.locator("table.tasks tbody tr[data-task-id]")).to_have_count(before + 1)
    _shot(page, "tasks-list")


def test_usage_charts_and_projection_lag(console: Console, operator: Session) -> None:
    page = operator.page
    page.locator("body").press("g")
    page.locator("body").press("u")
    expect(page.locator("h1")).to_have_text("Usage")
    expect(page.locator("svg.chart").first).to_be_visible()
    assert page.locator("svg.chart rect.bar").count() >= 4  # tokens and cost, per day and per model
    expect(page.locator("table.usage")).to_contain_text("scripted-model")
    expect(page.locator("table.lag-table")).to_contain_text("postgres")
    _shot(page, "usage")


def test_the_console_is_readable_on_a_phone(browser: Browser, console: Console) -> None:
    session = _open(browser, console, console.operator_key, viewport=PHONE)
    page = session.page
    page.goto(f"{console.base}/console/#/tasks/{console.tasks['answered']}")
    _wait_ended(page)
    expect(page.locator(".dag-card")).to_contain_text("No plan")
    expect(page.locator("#tt-facts")).to_contain_text("completed")
    # One column: nothing wider than the screen but what scrolls inside its own box.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px screen"
    _shot(page, "task-page-phone")
    page.click(".top nav a.nav-tasks")
    expect(page.locator("table.tasks")).to_be_visible()
    _shot(page, "tasks-list-phone")
    _close(session, console)


def test_a_bad_key_is_refused_and_the_console_needs_no_outside_request(
    browser: Browser, console: Console
) -> None:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    response = page.goto(f"{console.base}/console/")
    assert response is not None
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp, csp
    page.fill("#api-key", "alk_nope_nope")
    page.press("#api-key", "Enter")
    expect(page.locator(".login .error")).to_contain_text("not accepted")
    _shot(page, "login")
    context.close()
    assert all(_same_origin(url, console) for url in requests), requests
