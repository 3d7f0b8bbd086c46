"""The rule that picks a job's model, and @champion's, with several objectives or limits."""

from __future__ import annotations

import dataclasses

from tuning.champion import Standing, decide
from tuning.objective import Objective
from tuning.selection import front

ACC = Objective("val_accuracy", "maximize")


@dataclasses.dataclass
class _M:
    value: float
    figures: dict[str, float]


def test_front_keeps_the_models_no_other_beats_on_both() -> None:
    a = _M(0.95, {"n_params": 1000})  # best and biggest
    b = _M(0.93, {"n_params": 300})  # smaller, a little worse: on the front
    c = _M(0.92, {"n_params": 400})  # worse and bigger than b: dominated
    d = _M(0.90, {"n_params": 100})  # smallest: on the front
    e = _M(0.99, {})  # no figure: left out
    assert front([a, b, c, d, e], ACC, "n_params") == [a, b, d]
    same = _M(0.95, {"n_params": 1000})
    assert front([a, same], ACC, "n_params") == [a, same]  # equal: neither dominates


def _decide(value, current, **kw):
    return decide(objective=ACC, metric="val_accuracy", value=value, data_key="d",
                  current=current, **kw)  # fmt: skip


def test_champion_moves_to_a_smaller_model_within_noise_and_says_which_rule() -> None:
    old = Standing("1", "val_accuracy", "d", 0.95, figures={"latency_ms": 0.02})
    d = _decide(0.94, old, test=("mcnemar_exact", 0.8), prefer="latency_ms",
                figures={"latency_ms": 0.01}, reverse=("mcnemar_exact", 0.4))  # fmt: skip
    assert d.promote and "rule: lowest latency_ms within noise" in d.text
    assert "latency_ms 0.01 vs 0.02" in d.reason and "p=0.4 not below alpha" in d.reason
    # ...not when the champion is better beyond noise
    d = _decide(0.90, old, test=("mcnemar_exact", 0.99), prefer="latency_ms",
                figures={"latency_ms": 0.01}, reverse=("mcnemar_exact", 0.01))  # fmt: skip
    assert not d.promote and "p=0.01 below alpha" in d.reason
    # ...nor when it is not smaller
    d = _decide(0.94, old, test=("mcnemar_exact", 0.8), prefer="latency_ms",
                figures={"latency_ms": 0.03}, reverse=("mcnemar_exact", 0.4))  # fmt: skip
    assert not d.promote


def test_a_champion_over_todays_limits_is_replaced() -> None:
    old = Standing("2", "val_accuracy", "d", 0.99, figures={"n_params": 5000})
    d = _decide(0.90, old, limits={"n_params": 1000}, figures={"n_params": 800})
    assert d.promote and "over today's limits (n_params 5,000 > 1000)" in d.reason
    # within the limits, the usual rule: no better beyond noise, it stays
    d = _decide(0.90, old, limits={"n_params": 9000}, test=("mcnemar_exact", 0.9))
    assert not d.promote


def test_paired_gap_is_the_shortfall_on_the_same_rows_with_its_standard_error() -> None:
    import numpy as np

    from tuning.champion import paired_gap

    truth = np.array(["a"] * 100)
    better = np.array(["a"] * 90 + ["b"] * 10)  # 90 right
    other = np.array(["a"] * 85 + ["b"] * 15)  # 85 right, every miss of `better` among them
    gap, se = paired_gap("multiclass", truth, better, other, metric="val_accuracy")
    d = np.array([0.0] * 85 + [1.0] * 5 + [0.0] * 10)
    assert gap == 0.05 and abs(se - d.std(ddof=1) / 10) < 1e-12
    y = np.linspace(0, 1, 50)
    gap, se = paired_gap("regression", y, y, y + 0.1, metric="val_mae")
    assert abs(gap - 0.1) < 1e-12 and se < 1e-9  # the same shortfall on every row


def test_champion_moves_to_a_smaller_model_only_within_one_standard_error() -> None:
    old = Standing("1", "val_accuracy", "d", 0.95, figures={"n_params": 9000})
    kw = dict(test=("mcnemar_exact", 0.9), prefer="n_params", figures={"n_params": 1000},
              reverse=("mcnemar_exact", 0.2), within_se=1.0)  # fmt: skip
    # The test does not find the champion better (p=0.2), but the new model is 1.5 SE short.
    d = _decide(0.94, old, gap=(0.006, 0.004), **kw)
    assert not d.promote and "short by 0.006 > 1 x SE 0.004" in d.reason
    d = _decide(0.94, old, gap=(0.003, 0.004), **kw)
    assert d.promote and "short by 0.003 <= 1 x SE 0.004" in d.reason
    d = _decide(0.94, old, gap=(0.006, 0.004), **{**kw, "within_se": None})
    assert d.promote  # the paired test alone, as before
