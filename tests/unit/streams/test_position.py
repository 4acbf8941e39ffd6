"""Log positions and their text form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.position import Position


@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True),
    st.integers(0, 10**6),
    st.integers(0, 2**63 - 1),
)
def test_a_position_round_trips_through_its_token(topic: str, partition: int, offset: int) -> None:
    position = Position(topic, partition, offset)
    assert Position.parse(position.token()) == position


@pytest.mark.parametrize("token", ["", "t:1", "t:1:x", "t:-1:3", "a b:1:2", "t:1:2:3", f"t:1:{2**63}"])
def test_malformed_tokens_are_refused_with_the_expected_form(token: str) -> None:
    with pytest.raises(ValueError, match="topic:partition:offset"):
        Position.parse(token)
