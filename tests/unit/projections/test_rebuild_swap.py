"""The Elasticsearch swap of ``agentlog rebuild``: which alias actions replace which indices."""

from __future__ import annotations

from projections.rebuild import generation_prefix, swap_actions

PREFIX = "audit"


def test_generation_names_are_outside_the_live_template_pattern() -> None:
    # The template matches "<prefix>-*": a half-built generation must not join the alias early.
    assert not generation_prefix(PREFIX, "20261122").startswith(f"{PREFIX}-")


def test_first_rebuild_deletes_the_projectors_own_indices_and_points_write_aliases_at_the_new() -> None:
    new = ["audit_r2-2026.10", "audit_r2-2026.11"]

    actions, archived, deleted = swap_actions(PREFIX, ["audit-2026.10", "audit-2026.11"], {}, new)

    assert actions == [
        {"remove_index": {"index": "audit-2026.10"}},
        {"remove_index": {"index": "audit-2026.11"}},
        {"add": {"index": "audit_r2-2026.10", "alias": "audit"}},
        {"add": {"index": "audit_r2-2026.10", "alias": "audit-2026.10", "is_write_index": True}},
        {"add": {"index": "audit_r2-2026.11", "alias": "audit"}},
        {"add": {"index": "audit_r2-2026.11", "alias": "audit-2026.11", "is_write_index": True}},
    ]
    assert (archived, deleted) == ([], ["audit-2026.10", "audit-2026.11"])


def test_a_later_rebuild_archives_the_previous_generation_and_moves_its_write_aliases() -> None:
    serving = ["audit_r1-2026.11", "audit-2026.12"]  # December began after rebuild r1

    actions, archived, deleted = swap_actions(
        PREFIX, serving, {"audit-2026.11": "audit_r1-2026.11"}, ["audit_r2-2026.11", "audit_r2-2026.12"]
    )

    assert actions == [
        {"remove": {"index": "audit_r1-2026.11", "alias": "audit"}},
        {"remove_index": {"index": "audit-2026.12"}},
        {"remove": {"index": "audit_r1-2026.11", "alias": "audit-2026.11"}},
        {"add": {"index": "audit_r2-2026.11", "alias": "audit"}},
        {"add": {"index": "audit_r2-2026.11", "alias": "audit-2026.11", "is_write_index": True}},
        {"add": {"index": "audit_r2-2026.12", "alias": "audit"}},
        {"add": {"index": "audit_r2-2026.12", "alias": "audit-2026.12", "is_write_index": True}},
    ]
    assert (archived, deleted) == (["audit_r1-2026.11"], ["audit-2026.12"])


def test_a_month_the_rebuild_did_not_produce_stays_in_service() -> None:
    # Begun after the rebuild read the log: only the live projector has written it.
    actions, archived, deleted = swap_actions(
        PREFIX, ["audit-2026.11", "audit-2027.01"], {}, ["audit_r2-2026.11"]
    )

    assert not any("audit-2027.01" in str(action) for action in actions)
    assert (archived, deleted) == ([], ["audit-2026.11"])
