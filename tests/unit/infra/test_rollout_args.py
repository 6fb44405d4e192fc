"""The rollout command's --steps, as a user types them."""

from __future__ import annotations

import argparse

import pytest

from infra.ops.rollout.__main__ import percents


def test_steps_are_percents_with_or_without_the_sign() -> None:
    assert percents("10,50,100") == percents("10%, 50%, 100%") == (10.0, 50.0, 100.0)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ten,100", "such as 10,50,100"),
        ("0.1,0.5,1", "end at 100"),  # fractions, not percents
        ("50,10,100", "must increase"),
    ],
)
def test_steps_that_are_not_increasing_percents_ending_at_100_are_refused_with_an_example(
    text: str, error: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=error):
        percents(text)
