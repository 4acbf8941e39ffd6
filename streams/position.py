"""Where a record is in the log, and its text form (``topic:partition:offset``) for clients.

Command endpoints answer with the position of the record they produced; query endpoints take it as
``?after=`` and answer once the read model has applied that record (read-your-writes).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Kafka topic names are letters, digits, '.', '_' and '-', so ':' separates unambiguously.
_TOKEN = re.compile(r"^([A-Za-z0-9._-]{1,249}):(\d{1,9}):(\d{1,19})$")


class Position(NamedTuple):
    topic: str
    partition: int
    offset: int

    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """The position ``token`` names; ``ValueError`` (with the expected form) when it names none."""
        match = _TOKEN.match(token)
        # Kafka offsets are signed 64-bit; a larger number names no record.
        if match is None or int(match.group(3)) >= 2**63:
            raise ValueError(f"{token!r} is not a position; expected topic:partition:offset")
        return cls(match.group(1), int(match.group(2)), int(match.group(3)))
