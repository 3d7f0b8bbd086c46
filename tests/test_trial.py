"""The trial's training: compile time measured the same way on every backend."""

from __future__ import annotations

import pytest

from tuning.trial import compile_seconds


def test_compile_seconds_is_the_first_epochs_excess_over_the_median() -> None:
    # Epochs of 3.0, 1.0, 1.2, 0.9 s, each followed by a 0.1 s hook that is not the epoch's:
    # the first exceeds the median of the others (1.0) by 2.0.
    hooks = [(13.0, 13.1), (14.1, 14.2), (15.4, 15.5), (16.4, 16.5)]
    assert compile_seconds(10.0, hooks) == pytest.approx(2.0)
    assert compile_seconds(10.0, [(11.0, 11.1)]) == 0.0  # one epoch: nothing to compare with
    assert compile_seconds(10.0, [(10.5, 10.6), (11.6, 11.7)]) == 0.0  # first epoch faster
