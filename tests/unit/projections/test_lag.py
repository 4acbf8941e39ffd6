"""Projection-lag arithmetic: events and seconds behind, per partition and per projector."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from projections.lag import (
    PartitionLag,
    ProjectionLag,
    export,
    partition_lag,
    pending_from,
    projector_lag,
)

NOW = datetime(2026, 11, 3, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def lag(position: int | None, *, start: int = 0, end: int = 10, ts: int | None = None) -> PartitionLag:
    return partition_lag(
        "t", 0, log_start=start, log_end=end, position=position, now=NOW, first_pending_timestamp_ms=ts
    )


@pytest.mark.parametrize(
    ("position", "start", "end", "expected"),
    [
        (None, 0, 10, 0),  # nothing stored: from the log start
        (None, 4, 10, 4),
        (2, 4, 10, 4),  # below the log start: those records are gone, it resumes at the start
        (7, 0, 10, 7),
        (10, 0, 10, 10),
        (12, 0, 10, 10),  # past the end (a read-uncommitted end, say): caught up, never negative
    ],
)
def test_the_first_pending_offset(position: int | None, start: int, end: int, expected: int) -> None:
    assert pending_from(position, start, end) == expected


def test_a_caught_up_partition_is_zero_behind_whatever_the_timestamp() -> None:
    assert (lag(10, ts=None).events_behind, lag(10, ts=None).seconds_behind) == (0, 0.0)


def test_behind_by_the_records_since_the_position_and_the_age_of_the_first_of_them() -> None:
    behind = lag(6, ts=NOW_MS - 42_500)

    assert behind.events_behind == 4
    assert behind.seconds_behind == pytest.approx(42.5)
    assert (behind.position, behind.log_start_offset, behind.log_end_offset) == (6, 0, 10)


def test_no_position_counts_the_whole_log() -> None:
    assert lag(None, start=3, ts=NOW_MS - 1000).events_behind == 7


def test_an_unread_first_pending_record_leaves_the_age_unknown() -> None:
    assert lag(6, ts=None).seconds_behind is None


def test_a_record_from_a_clock_ahead_of_ours_is_zero_seconds_old() -> None:
    assert lag(6, ts=NOW_MS + 5000).seconds_behind == 0.0


def test_a_projector_totals_events_and_takes_the_worst_age() -> None:
    total = projector_lag(
        "postgres",
        [
            partition_lag(
                "b", 1, log_start=0, log_end=5, position=2, now=NOW, first_pending_timestamp_ms=NOW_MS - 3000
            ),
            partition_lag(
                "a", 0, log_start=0, log_end=9, position=9, now=NOW, first_pending_timestamp_ms=None
            ),
            partition_lag(
                "b",
                0,
                log_start=0,
                log_end=4,
                position=None,
                now=NOW,
                first_pending_timestamp_ms=NOW_MS - 9000,
            ),
        ],
    )

    assert (total.events_behind, total.seconds_behind) == (7, pytest.approx(9.0))
    assert [(p.topic, p.partition) for p in total.partitions] == [("a", 0), ("b", 0), ("b", 1)]


def test_an_unknown_age_neither_hides_known_ones_nor_passes_for_caught_up() -> None:
    known = lag(6, ts=NOW_MS - 2000)
    unknown = lag(6, ts=None)

    assert projector_lag("p", [known, unknown]).seconds_behind == pytest.approx(2.0)
    assert projector_lag("p", [unknown]).seconds_behind is None
    assert projector_lag("p", []).seconds_behind == 0.0
    assert projector_lag("p", []).events_behind == 0


def test_export_sets_the_gauges_per_projector() -> None:
    export(
        ProjectionLag(
            measured_at=NOW,
            projectors=[
                projector_lag("postgres", [lag(6, ts=NOW_MS - 2000)]),
                projector_lag("elasticsearch", [lag(6, ts=None)]),
            ],
        )
    )

    def sample(name: str, projector: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"projector": projector})

    assert sample("agentlog_projection_lag_events", "postgres") == 4
    assert sample("agentlog_projection_lag_seconds", "postgres") == pytest.approx(2.0)
    assert sample("agentlog_projection_lag_events", "elasticsearch") == 4
    assert math.isnan(sample("agentlog_projection_lag_seconds", "elasticsearch") or 0.0)
