"""verify catches an edited, a deleted, a re-ordered and a duplicated event and a broken link."""

from __future__ import annotations

from audit.seal import make_seal, plan
from audit.verify import LoggedEvent, check_seal, day_leaves, verify_task, verify_tasks
from schemas.events import AuditSealed
from tests.unit.audit.chains import T0, edited, history, logged, rechained


def test_an_intact_history_verifies() -> None:
    verdict = verify_task("t-1", logged(history()))
    assert verdict.ok and verdict.events == 6 and verdict.last_sequence == 5


def test_an_edited_payload_is_named_with_its_sequence() -> None:
    verdict = verify_task("t-1", logged(edited(history(), 2)))
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (2, "edited")


def test_an_edited_first_event_is_caught() -> None:
    verdict = verify_task("t-1", logged(edited(history(), 0)))
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (0, "edited")


def test_an_edited_last_event_needs_an_attestation() -> None:
    chain = history(events=5)
    tampered = logged(edited(chain, 4))
    assert verify_task("t-1", tampered).ok  # nothing on the chain holds the last digest
    verdict = verify_task("t-1", tampered, attested={4: chain[4][0].digest})
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (4, "edited")


def test_a_deleted_event_is_missing() -> None:
    events = logged(history())
    del events[3]
    verdict = verify_task("t-1", events)
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (3, "missing")
    assert verdict.first_break.found == 4


def test_a_deleted_tail_is_missing_against_a_checkpoint() -> None:
    chain = history()
    verdict = verify_task("t-1", logged(chain)[:4], attested={5: chain[5][0].digest})
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (4, "missing")


def test_two_swapped_events_are_out_of_order() -> None:
    events = logged(history())
    events[2], events[3] = events[3], events[2]
    verdict = verify_task("t-1", events)
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (2, "out-of-order")
    assert verdict.first_break.found == 3


def test_a_redelivered_copy_is_fine_but_a_different_duplicate_is_not() -> None:
    events = logged(history())
    assert verify_task("t-1", [*events[:3], events[2], *events[3:]]).ok
    other = logged(edited(history(), 2))[2]
    verdict = verify_task("t-1", [*events[:3], other, *events[3:]])
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (2, "duplicate")


def test_a_rewritten_prev_hash_is_a_chain_break() -> None:
    events = logged(history())
    bad = events[3]
    events[3] = LoggedEvent(**{**bad.__dict__, "prev_hash": "00" * 32, "digest": "11" * 32})
    verdict = verify_task("t-1", events)
    assert verdict.first_break is not None
    assert (verdict.first_break.sequence, verdict.first_break.kind) == (3, "chain-break")


def test_a_consistent_rewrite_passes_the_chain_but_not_the_seal() -> None:
    original, rewritten = logged(history()), logged(rechained(history(), 2))
    assert verify_task("t-1", rewritten).ok
    day = T0.date().isoformat()
    sealed = make_seal("acme", day, day_leaves(original, "acme", day), now=T0, sealed_by="test")
    assert check_seal(sealed, day_leaves(original, "acme", day)).ok
    verdict = check_seal(sealed, day_leaves(rewritten, "acme", day))
    assert not verdict.ok and verdict.found_events == verdict.sealed_events == 6


def test_tasks_are_verified_separately_and_seals_are_per_org() -> None:
    a, b = logged(history("t-a")), logged(history("t-b", org="other"))
    interleaved = [e for pair in zip(a, b, strict=True) for e in pair]
    assert [v.task_id for v in verify_tasks(interleaved)] == ["t-a", "t-b"]
    assert all(v.ok for v in verify_tasks(interleaved))
    day = T0.date().isoformat()
    assert len(day_leaves(interleaved, "acme", day)) == 6


def test_sealing_plan_keeps_sealed_days_and_reports_other_roots() -> None:
    day = T0.date().isoformat()
    leaves = day_leaves(logged(history()), "acme", day)
    sealed = make_seal("acme", day, leaves, now=T0, sealed_by="test")
    same = make_seal("acme", day, leaves, now=T0, sealed_by="again")
    other = make_seal("acme", day, leaves[:-1], now=T0, sealed_by="again")
    assert same.seal_id == sealed.seal_id
    assert plan([same], []) == ([same], [], [])
    assert plan([same], [sealed]) == ([], [sealed], [])
    assert plan([other], [sealed]) == ([], [], [(sealed, other)])
    assert isinstance(sealed, AuditSealed)
