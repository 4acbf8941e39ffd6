"""The ``agentlog`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_audit_integrity import export, import_, seal, verify
from api.cli_audit_timeline import diff, print_timeline, read_timeline, replay, state
from api.cli_common import console, err, fail, read_argument, wait_for_task
from api.cli_fork import compare_tasks, fork
from api.cli_keys import demo_key, keys_app
from api.cli_projections import rebuild, reconcile
from api.cli_reexecute import reexecute
from streams.settings import Settings, get_settings

app = typer.Typer(help="agentlog: event-sourced multi-agent platform on Kafka.", no_args_is_help=True)

COMPONENTS = (
    "registry",
    "api",
    "offline-llm",
    "processor",
    "projector-postgres",
    "projector-elasticsearch",
    "auditor",
)
EXAMPLE_QUERY = "What is (17 + 25) * 3? Use the calculator."


def _state_dir() -> Path:
    return Path(os.environ.get("AGENTLOG_HOME", ".agentlog"))


def _configure_logging(component: str, settings: Settings) -> None:
    """JSON log lines (by default) naming task, org and trace; spans exported if configured."""
    from streams import tracing
    from streams.logs import configure_logging

    configure_logging(component, format=settings.log_format, level=settings.log_level)
    tracing.configure(settings, component)


async def _prepare(settings: Settings) -> None:
    from projections.migrate import migrate
    from streams.admin import ensure_topics

    created = await ensure_topics(settings)
    applied = await migrate(settings.postgres_dsn)
    if created:
        err.print(f"created topics: {', '.join(created)}")
    if applied:
        err.print(f"applied migrations: {', '.join(applied)}")


schemas_app = typer.Typer(help="The event schemas against the schema registry.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("check")
def schemas_check(
    registry: Annotated[str | None, typer.Option(help="Registry URL (default: the platform's).")] = None,
    released: Annotated[
        bool,
        typer.Option(
            "--released",
            help="Check against the released set committed under schemas/released (offline, no registry).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Fail if a schema in the working tree is incompatible with the registry or the released set."""
    if released:
        _check_released(as_json)
        return
    from schemas.registry.check import check_subjects, local_schemas

    settings = get_settings()
    url = registry or settings.schema_registry_url
    try:
        results = check_subjects(url, local_schemas(settings))
    except httpx.HTTPError as exc:
        raise fail(f"schema registry at {url} did not answer: {exc}") from exc
    rows = [(r.subject, r.status, r.problems) for r in results]
    if as_json:
        typer.echo(json.dumps([r.__dict__ | {"problems": list(r.problems)} for r in results], indent=2))
    else:
        _print_schema_checks(f"schemas vs {url}", rows)
    bad = [r for r in results if r.status == "incompatible"]
    if bad:
        raise fail(f"{len(bad)} schema(s) incompatible with the registry")


_STATUS_COLOUR = {
    "compatible": "green",
    "unchanged": "green",
    "new": "cyan",
    "incompatible": "red",
    "removed": "red",
}


def _print_schema_checks(title: str, rows: list[tuple[str, str, tuple[str, ...]]]) -> None:
    table = Table(title=title)
    for column in ("subject", "status", "problems"):
        table.add_column(column)
    for subject, status, problems in rows:
        table.add_row(subject, f"[{_STATUS_COLOUR[status]}]{status}[/]", "\n".join(problems))
    Console().print(table)


def _check_released(as_json: bool) -> None:
    from schemas.releases import RELEASED_DIR, check, released_versions, working_tree_schemas

    results = check(working_tree_schemas(), released_versions())
    if as_json:
        typer.echo(
            json.dumps([r.__dict__ | {"problems": list(r.problems), "ok": r.ok} for r in results], indent=2)
        )
    else:
        _print_schema_checks(
            f"schemas vs {RELEASED_DIR}", [(r.record, r.status, r.problems) for r in results]
        )
    bad = [r for r in results if not r.ok]
    if bad:
        raise fail(f"{len(bad)} schema(s) break the released set: {', '.join(r.record for r in bad)}")


@schemas_app.command("release")
def schemas_release() -> None:
    """Add the working tree's new and changed schemas to the released set (refused if incompatible)."""
    from schemas.releases import IncompatibleReleaseError, release

    try:
        written = release()
    except IncompatibleReleaseError as exc:
        raise fail(str(exc)) from exc
    for path in written:
        console.print(f"released {path}")
    if not written:
        console.print("nothing changed since the last release")


app.add_typer(keys_app, name="keys")

policy_app = typer.Typer(help="The tool-call policy (Cedar; docs/policy.md).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    request: Annotated[
        str,
        typer.Argument(
            help='The request as JSON, @file or @- (stdin): {"org_id", "user_id", "role", "tool", ...}.'
        ),
    ],
    policy_dir: Annotated[
        Path | None,
        typer.Option(help="Per-org policy files (default: AGENTLOG_POLICY_DIR, else defaults only)."),
    ] = None,
) -> None:
    """Judge one tool call as the processor would: allow, deny or require approval, and which rule decided."""
    from processors.policy.check import PolicyRequestError, check_request
    from processors.policy.loader import PolicyDirectoryError
    from processors.policy.policy_file import PolicyFileError

    text = read_argument(request)
    configured = get_settings().policy_dir
    directory = policy_dir or (Path(configured) if configured else None)
    try:
        decision = check_request(text, directory)
    except (PolicyRequestError, PolicyFileError, PolicyDirectoryError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(decision.model_dump_json(indent=2))


@app.command()
def prepare() -> None:
    """Create the Kafka topics and apply the Postgres migrations (idempotent)."""
    asyncio.run(_prepare(get_settings()))


@app.command()
def asyncapi(
    check: Annotated[bool, typer.Option("--check", help="Fail if the file is stale; write nothing.")] = False,
    path: Annotated[Path, typer.Option(help="Where the document lives.")] = Path("docs/asyncapi.yaml"),
) -> None:
    """Generate the AsyncAPI 3 document of the topics from the catalogue and the Avro schemas."""
    from streams.asyncapi import check_document, write_document

    if check:
        if not check_document(path):
            raise fail(f"{path} is stale: run `agentlog asyncapi` and commit it")
        console.print(f"{path} is up to date")
    elif write_document(path):
        console.print(f"wrote {path}")
    else:
        console.print(f"{path} unchanged")


@app.command(hidden=True)
def run(component: Annotated[str, typer.Argument(help=f"One of: {', '.join(COMPONENTS)}")]) -> None:
    """Run one component in the foreground (``serve`` starts each of them this way)."""
    import uvicorn

    settings = get_settings()
    _configure_logging(component, settings)
    from streams.metrics import WORKER_COMPONENTS, serve_worker_metrics

    if component in WORKER_COMPONENTS:
        serve_worker_metrics(settings.metrics_port, component)
    if component == "registry":
        from schemas.registry.app import create_app as registry_app

        uvicorn.run(
            registry_app(settings),
            host=settings.registry_host,
            port=settings.registry_port,
            log_level="info",
            log_config=None,  # uvicorn's loggers write through the root handler (JSON lines)
        )
    elif component == "api":
        from api.app import create_app as api_app

        uvicorn.run(
            api_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_level="info",
            log_config=None,  # uvicorn's loggers write through the root handler (JSON lines)
        )
    elif component == "offline-llm":
        from processors.llm.offline import create_app as offline_app

        uvicorn.run(
            offline_app(),
            host="127.0.0.1",
            port=settings.offline_llm_port,
            log_level="warning",
            log_config=None,
        )
    elif component == "processor":
        from processors.task.worker import main as processor_main

        sys.argv = [sys.argv[0]]  # faust's Worker reads argv; it must not see ours
        processor_main()
    elif component.startswith("projector-"):
        from projections.runner import main as projector_main

        projector_main(component.removeprefix("projector-"))
    elif component == "auditor":
        from audit.seal import run_auditor

        asyncio.run(run_auditor(settings))
    else:
        raise fail(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")


@app.command()
def serve() -> None:
    """Run the whole platform: schema registry, API, processor, projectors (and the offline LLM)."""
    from api.supervisor import supervise

    settings = get_settings()
    asyncio.run(_prepare(settings))
    if settings.offline:
        err.print(
            "[yellow]LLM: OFFLINE planner[/] (no OPENAI_BASE_URL/OPENAI_API_KEY set): deterministic answers"
        )
    else:
        err.print(f"LLM: {settings.llm_endpoint} model {settings.llm_model}")
    err.print(f"API http://{settings.api_host}:{settings.api_port}  (docs /docs)")
    err.print(f"schema registry {settings.schema_registry_url}")
    raise typer.Exit(supervise(settings, _state_dir() / "logs" / "platform"))


def _api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


@app.command()
def submit(
    query: Annotated[str, typer.Argument(help="What the task asks for.")],
    wait: Annotated[bool, typer.Option(help="Wait until the task ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    api_key: Annotated[
        str, typer.Option(envvar="AGENTLOG_API_KEY", help="An operator's API key (agentlog keys create).")
    ] = "",
) -> None:
    """Submit a task through the REST API and (by default) wait for its result."""
    settings = get_settings()
    if not api_key:
        raise fail("an API key is needed: --api-key or AGENTLOG_API_KEY (create one: agentlog keys create)")
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=_api_url(settings), timeout=10, headers=headers) as client:
        response = client.post("/v1/tasks", json={"query": query})
        if response.status_code != 202:
            raise fail(f"API answered {response.status_code}: {response.text}")
        task_id = response.json()["task_id"]
        view = (
            wait_for_task(client, task_id, timeout) if wait else {"task_id": task_id, "status": "submitted"}
        )
    if as_json:
        console.print_json(json.dumps(view))
    else:
        console.print(f"task {task_id}: {view['status'] if view else 'not visible yet'}")
        if view and view.get("result"):
            console.print(escape(view["result"]))
    if wait and (view is None or view["status"] != "completed"):
        raise typer.Exit(1)


def parse_event_data(text: str) -> Any:
    """``agentlog produce --data`` as JSON; raises ValueError with one line saying why it is not."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("--data is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError, and the integers past Python's 4300-digit conversion limit (plain ValueError).
        raise ValueError(f"--data is not valid JSON: {' '.join(str(exc).split())}") from exc


@app.command()
def produce(
    event_type: Annotated[
        str | None, typer.Argument(help="Event type: short (TaskSubmitted) or full Avro name.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help='The fields as JSON, @FILE or @- (stdin); envelope fields under "envelope".'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show the record; produce nothing.")
    ] = False,
    list_types: Annotated[bool, typer.Option("--list", help="List the event types, their topics.")] = False,
) -> None:
    """Validate an event against its schema and produce it to its topic (acks=all, waits for the ack)."""
    from aiokafka.errors import KafkaError

    from schemas.registry.client import RegistryRejected, RegistryUnavailable
    from streams.sdk import EventValidationError, UnknownEventTypeError, event_types, preview, produce_one

    settings = get_settings()
    if list_types:
        rows = [
            {"event_type": e.name, "full_name": e.fullname, "topic": e.topic.name(settings), "doc": e.doc}
            for e in event_types()
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="producible event types")
        for column in ("event type", "topic", "doc"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["event_type"], row["topic"], escape(row["doc"]))
        console.print(table)
        return
    if event_type is None or data is None:
        raise fail("give an EVENT_TYPE and --data JSON|@FILE|@- (or --list)")
    try:
        fields = parse_event_data(read_argument(data))
    except ValueError as exc:
        raise fail(str(exc)) from exc
    try:
        if dry_run:
            described = preview(event_type, fields, settings=settings)
            if as_json:
                typer.echo(json.dumps(described, indent=2))
            else:
                console.print(
                    f"dry run, nothing produced: {described['event_type']} -> "
                    f"{described['topic']}\\[{described['partition']}] key {escape(described['key'])}",
                    soft_wrap=True,
                )
                console.print_json(json.dumps(described))
            return
        produced = asyncio.run(produce_one(event_type, fields, settings=settings))
    except UnknownEventTypeError as exc:
        raise fail(str(exc)) from exc
    except EventValidationError as exc:
        if as_json:
            problems = [problem.model_dump(mode="json") for problem in exc.problems]
            typer.echo(json.dumps({"event_type": exc.event_type, "problems": problems}, default=repr))
        exits = [fail(str(problem)) for problem in exc.problems]
        raise exits[-1] from exc
    except (RegistryUnavailable, RegistryRejected, KafkaError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        typer.echo(produced.model_dump_json())
    else:
        console.print(
            f"produced {produced.event_type} to {produced.topic}\\[{produced.partition}]@{produced.offset}"
            f"  task {escape(str(produced.task_id))}  event {produced.event_id}",
            soft_wrap=True,
        )


def _platform_running(settings: Settings) -> bool:
    try:
        return httpx.get(f"{_api_url(settings)}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
def demo(
    query: Annotated[str, typer.Option(help="The example task.")] = EXAMPLE_QUERY,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the platform and the task.")] = 180.0,
) -> None:
    """Start the platform in the background (if not running), run an example task, show everything."""
    settings = get_settings()
    state = _state_dir()
    if not _platform_running(settings):
        (state / "logs").mkdir(parents=True, exist_ok=True)
        (state / "run").mkdir(parents=True, exist_ok=True)
        log_path = state / "logs" / "platform.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (state / "run" / "platform.pid").write_text(str(process.pid))
        console.print(f"started the platform (pid {process.pid}); log: {log_path}")
        deadline = time.monotonic() + timeout
        while not _platform_running(settings):
            if process.poll() is not None or time.monotonic() > deadline:
                raise fail(f"the platform did not come up; see {log_path} and {state / 'logs' / 'platform'}")
            time.sleep(0.5)
    mode = "OFFLINE planner (no LLM endpoint configured)" if settings.offline else settings.llm_endpoint
    console.print(f"LLM: [bold]{mode}[/]")
    console.print(f"submitting: {escape(repr(query))}")
    headers = {"Authorization": f"Bearer {demo_key('demo-org', 'demo-user')}"}
    with httpx.Client(base_url=_api_url(settings), timeout=10, headers=headers) as client:
        response = client.post("/v1/tasks", json={"query": query})
        if response.status_code != 202:
            raise fail(f"API answered {response.status_code}: {response.text}")
        task_id = response.json()["task_id"]
        view = wait_for_task(client, task_id, timeout)
    if view is None or view["status"] != "completed":
        raise fail(f"task {task_id} did not complete via the REST API within {timeout}s: {view}")
    console.print(f"[bold green]task {task_id} completed[/]: {escape(view['result'])}")
    print_timeline(read_timeline(settings, task_id), task_id)
    base = _api_url(settings)
    console.print(f"query it (with -H 'Authorization: Bearer {demo_key('demo-org', 'demo-user')}'):")
    for url in (
        f"{base}/v1/tasks/{task_id}",
        f"{base}/v1/tasks/{task_id}/events",
        f"{base}/docs",
        f"{settings.schema_registry_url}/subjects",
        f"{settings.elasticsearch_url}/{settings.es_index_prefix}/_search?q=task_id:{task_id}",
    ):
        console.print(f"  {url}")
    console.print(f"  agentlog replay {task_id}")


@app.command()
def stop() -> None:
    """Stop a platform started in the background by ``agentlog demo``."""
    pid_file = _state_dir() / "run" / "platform.pid"
    if not pid_file.exists():
        console.print("no background platform recorded")
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        console.print(f"platform (pid {pid}) was not running")
    else:
        for _ in range(60):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        console.print(f"stopped the platform (pid {pid})")
    pid_file.unlink()


app.command()(replay)
app.command()(state)
app.command()(diff)
app.command()(rebuild)
app.command()(reconcile)
app.command()(verify)
app.command()(seal)
app.command()(export)
app.command("import")(import_)
app.command()(reexecute)
app.command()(fork)
app.command("compare")(compare_tasks)


def main() -> None:
    from streams.logs import configure_logging

    # Interactive commands: readable lines, warnings and worse (`run` reconfigures for components).
    configure_logging("cli", format="text", level="WARNING")
    app()


if __name__ == "__main__":
    main()
