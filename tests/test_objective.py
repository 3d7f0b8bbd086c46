"""One type knows what "better" means: the objective's direction, and the champion's decision."""

from __future__ import annotations

import doctest
import math

import pytest

from tuning import champion, objective
from tuning.champion import Decision, Standing, decide
from tuning.config import ObjectiveConfig
from tuning.objective import Objective


def test_the_examples_in_the_docstrings_hold() -> None:
    for module in (objective, champion):
        assert doctest.testmod(module).failed == 0, module.__name__


@pytest.mark.parametrize(
    ("direction", "best"), [("maximize", [0.9, 0.5, 0.1]), ("minimize", [0.1, 0.5, 0.9])]
)
def test_the_sort_key_puts_the_best_value_first(direction: str, best: list[float]) -> None:
    o = Objective("v", direction)  # type: ignore[arg-type]
    assert sorted([0.5, 0.1, 0.9], key=o.sort_key) == best
    assert min([0.5, 0.9, 0.1], key=o.sort_key) == best[0] == o.best([0.5, 0.9, 0.1])
    assert o.ranked(["b", "a", "c"], {"a": 0.1, "b": 0.5, "c": 0.9}.get) == [
        {0.1: "a", 0.5: "b", 0.9: "c"}[v] for v in best
    ]
    assert o.running_best([0.5, 0.1, 0.9]) == [0.5, min(0.5, 0.1, key=o.sort_key), best[0]]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_better_in_the_experiments_direction(direction: str) -> None:
    o = ObjectiveConfig(metric="val_accuracy", direction=direction)
    up = direction == "maximize"
    assert o.better(0.9, 0.8) is up and o.better(0.8, 0.9) is not up
    assert o.better(0.8, 0.8) is False and o.better(0.1, None) is True
    assert o.keras_mode == ("max" if up else "min") and o.maximize is up


def test_a_studys_direction_is_read_by_name() -> None:
    def named(name: str) -> object:
        return type("StudyDirection", (), {"name": name})()

    class Study:
        directions = [named("MAXIMIZE")]

    assert Objective.of_study(Study(), "val_accuracy") == Objective("val_accuracy", "maximize")
    Study.directions = [named("MINIMIZE"), named("MAXIMIZE")]  # several: the primary's
    assert Objective.of_study(Study()) == Objective("value", "minimize")
    Study.directions = [named("NOT_SET")]
    with pytest.raises(ValueError, match="a study direction must be minimize or maximize"):
        Objective.of_study(Study())


ACC = Objective("val_accuracy", "maximize")
LOSS = Objective("val_loss", "minimize")


def _decide(o: Objective, value: float, current: Standing | None, **kw: object) -> Decision:
    return decide(objective=o, metric=o.metric, value=value, data_key="d", current=current, **kw)


def test_the_first_version_is_the_champion() -> None:
    d = _decide(ACC, 0.5, None)
    assert d.promote and d.reason == "first version of this model" and d.against is None


def test_a_champion_of_another_metric_stays() -> None:
    d = _decide(ACC, 0.99, Standing("3", "val_loss", "d", 9))
    assert not d.promote and d.against == "3" and "not comparable" in d.reason
    assert d.text.startswith("stayed: champion v3") and d.test == "none"
    assert math.isnan(d.p_value)


@pytest.mark.parametrize(("p", "moved"), [(0.01, True), (0.3, False)])
def test_on_changed_data_the_paired_test_on_todays_rows_decides(p: float, moved: bool) -> None:
    """The champion's recorded value was measured on other rows: only today's test counts,
    even where the new model's value is below the champion's old one."""
    old = Standing("3", ACC.metric, "olddigest", 0.99, rows=450)
    d = _decide(ACC, 0.80, old, test=("mcnemar_exact", p), rows=569)
    assert d.promote is moved and d.against == "3" and d.p_value == p
    assert d.reason.startswith("data changed since champion v3 was scored (450 rows, digest")
    assert "569 rows now" in d.reason and "both scored on today's validation rows" in d.reason
    assert not _decide(ACC, 0.99, old).promote  # no paired test: no move on other data


@pytest.mark.parametrize(("rule", "moved"), [("replace", True), ("keep", False)])
def test_a_champion_that_cannot_score_todays_data_follows_the_rule(rule: str, moved: bool) -> None:
    old = Standing("3", ACC.metric, "d", 0.99, inputs="abc")
    assert (
        not old.can_score("xyz")
        and old.can_score("abc")
        and Standing("1", "m", "d", 1).can_score("x")
    )
    d = _decide(ACC, 0.5, old, stale="KeyError: 'x'", stale_rule=rule)
    assert d.promote is moved
    assert "cannot score today's data (KeyError: 'x')" in d.reason
    assert d.reason.endswith(f"(tracking.stale_champion: {rule})")


@pytest.mark.parametrize(
    ("o", "new", "old", "p", "moved"),
    [
        (ACC, 0.95, 0.90, 0.01, True),
        (ACC, 0.95, 0.90, 0.20, False),  # better, within noise
        (ACC, 0.85, 0.90, 0.01, False),  # worse, whatever the test says
        (LOSS, 0.20, 0.30, 0.01, True),
        (LOSS, 0.40, 0.30, 0.01, False),
    ],
)
def test_the_champion_moves_only_when_better_beyond_noise(
    o: Objective, new: float, old: float, p: float, moved: bool
) -> None:
    d = _decide(o, new, Standing("2", o.metric, "d", old), test=("mcnemar_exact", p))
    assert d.promote is moved and d.test == "mcnemar_exact" and d.p_value == p
    assert d.text.startswith("moved: " if moved else "stayed: ")
    assert f"{o.metric} {new:.4f} vs champion v2 {old:.4f}; mcnemar_exact p={p:.3g}" in d.reason
    assert d.reason.endswith("(within noise)") is (o.better(new, old) and not moved)


def test_without_a_test_better_is_enough() -> None:
    assert _decide(ACC, 0.91, Standing("1", "val_accuracy", "d", 0.9)).promote
    assert not _decide(ACC, 0.89, Standing("1", "val_accuracy", "d", 0.9)).promote
