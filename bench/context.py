"""What every bench section is given: the stack's endpoints, the mode, and a unique run id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"


@dataclass
class BenchContext:
    """Shared by the sections of one ``make bench`` run."""

    settings: Settings  # the local stack (Kafka, Postgres, Elasticsearch, Redis) endpoints
    quick: bool  # CI smoke mode: tiny sizes, whole suite < 3 minutes
    llm_url: str  # base URL (".../v1") of the canned LLM server, already running
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    notes: list[str] = field(default_factory=list)  # honest remarks that go into the results file

    def prefix(self, section: str) -> str:
        """A topic / index / schema prefix no other run or section uses."""
        return f"bench-{self.run_id}-{section}"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full
