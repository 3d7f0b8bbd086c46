"""The paired tests behind @champion: a clear win is significant, a coin flip is not."""

from __future__ import annotations

import numpy as np

from tuning.champion import MCNEMAR, PAIRED_BOOTSTRAP, paired_test


def test_mcnemar_on_the_rows_only_one_model_gets_right() -> None:
    truth = np.array(["a", "b"] * 100, dtype=object)
    champion = truth.copy()
    champion[:40] = "x"  # the champion misses 40 rows
    clear = truth.copy()  # the challenger gets them all: 40 wins, 0 losses
    test, p = paired_test("multiclass", truth, clear, champion, metric="val_accuracy")
    assert test == MCNEMAR and p < 1e-6
    flip = truth.copy()
    flip[40:80] = "x"  # 40 wins and 40 losses: no better
    assert paired_test("multiclass", truth, flip, champion, metric="val_accuracy")[1] > 0.5
    assert paired_test("multiclass", truth, champion, champion, metric="val_accuracy")[1] == 1.0


def test_paired_bootstrap_of_the_errors_for_regression() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=300)
    champion = truth + rng.normal(scale=1.0, size=300)
    better = truth + rng.normal(scale=0.3, size=300)
    test, p = paired_test("regression", truth, better, champion, metric="val_mae")
    assert test == PAIRED_BOOTSTRAP and p < 0.01
    same = champion + rng.normal(scale=1e-3, size=300)
    assert paired_test("regression", truth, same, champion, metric="val_rmse")[1] > 0.05
