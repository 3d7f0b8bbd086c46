"""Fitting: validation scored in as few equal batches as the fit allows."""

from __future__ import annotations

from tuning.train import MAX_VALIDATION_BATCH, validation_batch_size


def test_validation_is_scored_in_as_few_equal_batches_as_fit() -> None:
    assert validation_batch_size(288) == 288 and validation_batch_size(5000) == 5000
    big = 3 * MAX_VALIDATION_BATCH - 7
    size = validation_batch_size(big)
    assert size <= MAX_VALIDATION_BATCH and -(-big // size) == 3
