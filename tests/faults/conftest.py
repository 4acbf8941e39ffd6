"""Fault-test fixtures: a platform on the private stack, driven by the scripted LLM, whose requests are
timed per idempotency key (so a test can tell a call redone after a fault from one made twice)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.fixtures.platform import running_platform
from tests.fixtures.private_stack import PrivateStack
from tests.fixtures.scripted_llm import ScriptedLlm, providers_yaml, start


@dataclass
class TimedLlm:
    """The scripted LLM, asked when each request of each idempotency key arrived."""

    llm: ScriptedLlm

    def requests(self) -> dict[str, list[float]]:
        return self.llm.request_times()

    def made(self, task_ids: list[str]) -> int:
        """How many requests the tasks' calls have made so far."""
        prefixes = tuple(task_ids)
        return sum(len(t) for k, t in self.requests().items() if k.startswith(prefixes))

    def first_after(self, moment: float) -> float | None:
        later = [t for times in self.requests().values() for t in times if t >= moment]
        return min(later) if later else None


@dataclass(frozen=True)
class OutagePlatform:
    settings: Settings
    stack: PrivateStack
    llm: TimedLlm
    home: Path

    def supervisor_restarts(self) -> dict[str, int]:
        """How often the supervisor has seen each component exit (from ``serve.log``)."""
        counts: dict[str, int] = {}
        for line in (self.home / "serve.log").read_text(errors="replace").splitlines():
            if " exited with " in line:
                component = line.split(" exited with ")[0].split()[-1]
                counts[component] = counts.get(component, 0) + 1
        return counts


@pytest.fixture(scope="module")
def outage_platform(
    private_stack: PrivateStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OutagePlatform]:
    """``agentlog serve`` on the private stack with the scripted LLM, the prompt cache on and every
    answer streamed (tokens on Redis): every Redis-backed path of a task is exercised."""
    home = tmp_path_factory.mktemp("agentlog-outage")
    for llm in start(ScriptedLlm()):
        timed = TimedLlm(llm)
        providers = home / "providers.yaml"
        providers.write_text(providers_yaml(llm.url))
        env = {
            **private_stack.platform_env,
            "AGENTLOG_LLM_PROVIDERS_FILE": str(providers),
            "AGENTLOG_LLM_CACHE_ENABLED": "true",
            "AGENTLOG_LLM_STREAM_TOKENS": "true",
        }
        with running_platform(private_stack.settings, home, **env) as (settings, _process):
            yield OutagePlatform(settings, private_stack, timed, home)
