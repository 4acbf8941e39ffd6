"""The pure side of ``agentlog reconcile``: per-task summaries and their comparison."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.verify import LoggedEvent
from projections.reconcile import TaskSummary, check_log, compare, ordered_hash, summarize, summarize_log
from tests.unit.audit.chains import edited, history

IDS = [str(uuid.UUID(int=n)) for n in range(1, 8)]


def rows(task_id: str, ids: list[str]) -> list[tuple[str, int, str]]:
    return [(task_id, sequence, event_id) for sequence, event_id in enumerate(ids)]


def test_summarize_counts_events_takes_the_highest_sequence_and_hashes_ids_in_sequence_order() -> None:
    summaries = summarize(rows("t1", IDS[:3]) + rows("t2", IDS[3:4]))

    assert summaries == {
        "t1": TaskSummary(events=3, max_sequence=2, ordered_hash=ordered_hash(IDS[:3])),
        "t2": TaskSummary(events=1, max_sequence=0, ordered_hash=ordered_hash(IDS[3:4])),
    }
    assert ordered_hash(IDS[:3]) != ordered_hash([IDS[1], IDS[0], IDS[2]])


def test_summarize_rejects_rows_that_are_not_grouped_by_task_or_ordered_by_sequence() -> None:
    with pytest.raises(ValueError, match="not grouped"):
        summarize([("t1", 0, IDS[0]), ("t2", 0, IDS[1]), ("t1", 1, IDS[2])])
    with pytest.raises(ValueError, match="sequence order"):
        summarize([("t1", 1, IDS[0]), ("t1", 0, IDS[1])])


@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=3))
def test_the_log_summary_ignores_delivery_order_and_redeliveries(rnd: random.Random, repeats: int) -> None:
    history = rows("t1", IDS) + rows("t2", IDS[:2])
    delivered = history + [rnd.choice(history) for _ in range(repeats)]
    rnd.shuffle(delivered)

    assert summarize_log(delivered) == summarize(history)


def test_the_first_event_read_for_a_sequence_wins_on_the_log() -> None:
    # Two different events claiming one sequence: the projector keeps the first it sees, and so
    # does the log summary; the hash then shows which one a projection kept.
    log = summarize_log([("t1", 0, IDS[0]), ("t1", 0, IDS[1])])

    assert log["t1"] == TaskSummary(events=1, max_sequence=0, ordered_hash=ordered_hash([IDS[0]]))


def test_identical_sources_have_no_differences_and_their_totals() -> None:
    log = summarize(rows("t1", IDS[:3]) + rows("t2", IDS[3:5]))

    report = compare(log, {"postgres": dict(log), "elasticsearch": dict(log)})

    assert report.ok
    assert report.differences == []
    assert {source: (t.tasks, t.events) for source, t in report.totals.items()} == {
        "log": (2, 5),
        "postgres": (2, 5),
        "elasticsearch": (2, 5),
    }


def test_every_kind_of_difference_is_reported_with_both_values() -> None:
    log = summarize(rows("complete", IDS[:3]) + rows("gone", IDS[3:4]) + rows("swapped", IDS[4:6]))
    postgres = summarize(
        rows("complete", IDS[:2])  # the last event is missing
        + rows("stray", IDS[6:7])  # a task the log does not have
        + rows("swapped", [IDS[5], IDS[4]])  # right count and sequence, wrong events
    )

    report = compare(log, {"postgres": postgres})

    found = {(d.task_id, d.kind): (d.log, d.found) for d in report.differences}
    assert found == {
        ("complete", "events"): (3, 2),
        ("complete", "max_sequence"): (2, 1),
        ("complete", "ordered_hash"): (ordered_hash(IDS[:3]), ordered_hash(IDS[:2])),
        ("gone", "missing"): (1, None),
        ("stray", "extra"): (None, 1),
        ("swapped", "ordered_hash"): (ordered_hash(IDS[4:6]), ordered_hash([IDS[5], IDS[4]])),
    }
    assert all(d.source == "postgres" for d in report.differences)
    assert not report.ok


def test_an_event_held_twice_by_a_projection_is_a_difference() -> None:
    # Two indices behind the alias holding the same document: the count shows it.
    log = summarize(rows("t1", IDS[:2]))
    doubled = summarize([("t1", 0, IDS[0]), ("t1", 1, IDS[1]), ("t1", 1, IDS[1])])

    (difference, hash_difference) = compare(log, {"elasticsearch": doubled}).differences

    assert (difference.kind, difference.log, difference.found) == ("events", 2, 3)
    assert hash_difference.kind == "ordered_hash"


# --- the log checked against itself ------------------------------------------------------------


def chain_of(task_id: str = "t-1", events: int = 5) -> list[tuple[str, LoggedEvent]]:
    return [
        (str(event.envelope.event_id), LoggedEvent.of(event, f"t:0:{i}"))
        for i, (event, _) in enumerate(history(task_id, events))
    ]


def test_an_intact_log_has_no_differences_even_with_redelivered_copies() -> None:
    events = chain_of()

    assert check_log("t-1", events) == []
    assert check_log("t-1", events + events[2:4]) == []


def test_a_gap_in_the_sequences_is_reported_once_with_the_first_missing_sequence() -> None:
    events = chain_of(events=6)
    del events[2:4]

    (gap,) = check_log("t-1", events)

    assert (gap.source, gap.kind, gap.log, gap.found) == ("log", "sequence_gap", 2, 2)
    assert "2, 3" in gap.detail


def test_two_events_claiming_one_sequence_are_a_duplicate() -> None:
    events = chain_of()
    impostor = LoggedEvent.of(history("t-1", 5)[3][0], "t:0:9")
    events.append((IDS[0], impostor))

    differences = check_log("t-1", events)

    assert [(d.kind, d.log, d.found) for d in differences] == [("duplicate_sequence", events[3][0], IDS[0])]


def test_a_broken_hash_link_is_reported_as_verify_names_it() -> None:
    chain = edited(history("t-1", 5), 2)
    events = [
        (str(event.envelope.event_id), LoggedEvent.of(event, f"t:0:{i}"))
        for i, (event, _) in enumerate(chain)
    ]

    (broken,) = check_log("t-1", events)

    assert (broken.source, broken.kind) == ("log", "hash_chain")
    assert broken.detail.startswith("edited at sequence 2")
    assert broken.found == chain[2][0].digest


def test_log_differences_make_the_report_not_ok() -> None:
    log = summarize(rows("t1", IDS[:2]))
    report = compare(log, {})
    assert report.ok
    report.differences = check_log("t-1", chain_of()[1:])  # the submission is gone
    assert not report.ok and report.differences[0].kind == "sequence_gap"
