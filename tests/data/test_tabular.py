"""Tabular files: tasks, splits, missing values, bad data as one-line errors, the CLI.

CSV and Parquet files are generated here (seeded, see ``tabular_files.py``) under ``tmp_path``;
``load_dataset`` is cached on its arguments, so its cache is cleared around every load of a file
written by a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import experiment_id, mlflow_runs, nothing_created, one_line_error
from tabular_files import CITIES, FEATURES, RARE, animals, ids, load_file, with_gaps, write_file
from typer.testing import CliRunner

from tuning.cli import app
from tuning.data import load_dataset
from tuning.data.encoding import encode_frame
from tuning.errors import ConfigError
from tuning.model import METRICS, build_model
from tuning.train import fit

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


# -- A. good files -----------------------------------------------------------------------------


def test_multiclass_text_target_categories_and_bools(tmp_path: Path) -> None:
    raw = animals()
    data = load_file(write_file(raw, tmp_path / "animals.csv"), target="y")

    assert data.task == "multiclass" and data.kind == "tabular" and data.name == "animals"
    assert data.labels == ["bird", "cat", "dog"] == data.class_names  # sorted original strings
    assert data.n_classes == 3 and data.n_outputs == 3
    assert data.feature_names == FEATURES and data.targets == ["y"]
    assert data.sizes() == {"train": 96, "valid": 24, "test": 30}
    splits = [
        (data.x_train, data.y_train),
        (data.x_valid, data.y_valid),
        (data.x_test, data.y_test),
    ]
    for x, y in splits:
        assert x.dtype == np.float32 and x.shape[1] == len(FEATURES)
        assert y.dtype == np.int32
        assert set(np.unique(y).tolist()) == {0, 1, 2}  # stratified: every class in every split
        # Codes are indices of the original labels.
        assert [data.labels[c] for c in y] == raw["y"].iloc[ids(x)].tolist()
    # Stratified: 50 rows per class give each split the same share of every class.
    assert [np.bincount(y).tolist() for _, y in splits] == [[32] * 3, [8] * 3, [10] * 3]
    all_ids = np.concatenate([ids(x) for x, _ in splits])
    assert sorted(all_ids.tolist()) == list(range(len(raw)))  # a partition of the rows

    # Vocabularies: sorted text of the training rows only.
    train = raw.iloc[ids(data.x_train)]
    assert set(data.vocabulary) == {"city", "indoor"}
    assert data.vocabulary["city"] == sorted(set(train["city"]))
    assert data.vocabulary["indoor"] == ["False", "True"]
    unseen = [r for r in RARE if r not in data.vocabulary["city"]]
    assert unseen, "every rare city landed in training; pick another seed for this test"
    assert set(data.fill) == {"id", "size", "weight"}  # numeric columns only

    # Categories are codes 1..k in training (0 never), numbers as they are.
    vocab = data.vocabulary
    city_codes = data.x_train[:, FEATURES.index("city")].astype(int)
    assert city_codes.min() >= 1 and city_codes.max() <= len(vocab["city"])
    assert [vocab["city"][c - 1] for c in city_codes] == train["city"].tolist()
    indoor_codes = data.x_train[:, FEATURES.index("indoor")].astype(int)
    assert indoor_codes.min() >= 1
    assert [vocab["indoor"][c - 1] for c in indoor_codes] == [str(v) for v in train["indoor"]]
    np.testing.assert_array_equal(
        data.x_train[:, FEATURES.index("size")], train["size"].to_numpy(np.float32)
    )
    # A city seen only outside training gets the unknown code 0 there.
    for x in (data.x_valid, data.x_test):
        rows = raw.iloc[ids(x)]
        codes = x[:, FEATURES.index("city")]
        assert (codes[rows["city"].isin(unseen).to_numpy()] == 0).all()
        assert (codes[~rows["city"].isin(unseen).to_numpy()] >= 1).all()


def test_splits_are_seeded(tmp_path: Path) -> None:
    path = write_file(animals(), tmp_path / "animals.csv")
    a = load_file(path, target="y", seed=3)
    b = load_file(path, target="y", seed=3)
    c = load_file(path, target="y", seed=4)
    assert a is not b
    for split in ("x_train", "x_valid", "x_test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert sorted(ids(a.x_valid)) != sorted(ids(c.x_valid))
    assert sorted(ids(a.x_test)) != sorted(ids(c.x_test))


def test_binary_text_target_sigmoid_head_and_auc(tmp_path: Path) -> None:
    raw = animals()
    raw["y"] = np.where(raw["size"] > 10, "big", "small")
    data = load_file(write_file(raw, tmp_path / "sizes.csv"), target="y")
    assert data.task == "binary" and data.n_outputs == 1 and data.n_classes == 2
    assert data.labels == ["big", "small"]
    assert set(data.y_train.tolist()) == {0, 1}

    model = build_model({"n_hidden": 1, "n_neurons": 8}, data=data)
    head = model.get_layer("output")
    assert head.units == 1 and head.activation.__name__ == "sigmoid"
    assert model.loss == "binary_crossentropy"
    assert METRICS["binary"] == ("accuracy", "auc")
    result = fit(
        model, data, monitor="val_auc", direction="maximize", batch_size=32, max_epochs=1,
        patience=1,
    )  # fmt: skip
    assert {"val_auc", "val_accuracy", "auc", "accuracy", "loss"} <= set(result.history)
    assert result.epochs == 1 and 0.0 <= result.value <= 1.0
    assert model.predict(data.x_valid[:3], verbose=0).shape == (3, 1)


def _numbers(n: int = 100, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame(
        {
            "x1": x[:, 0],
            "x2": x[:, 1],
            "x3": x[:, 2],
            "l1": (x[:, 0] > 0).astype(int),
            "l2": (x[:, 1] > 0).astype(int),
            "l3": (x[:, 2] > 0.5).astype(int),
            "t1": x[:, 0] * 3 + rng.normal(size=n),
            "t2": np.exp(x[:, 1]),
        }
    )


def test_multilabel_has_one_sigmoid_unit_per_label(tmp_path: Path) -> None:
    path = write_file(_numbers(), tmp_path / "labels.csv")
    data = load_file(path, target=("l1", "l2", "l3"), features=("x1", "x2", "x3"))
    assert data.task == "multilabel" and data.targets == ["l1", "l2", "l3"]
    assert data.n_outputs == 3 and data.labels is None
    assert data.y_train.shape == (len(data.x_train), 3) and data.y_train.dtype == np.float32
    model = build_model({"n_hidden": 1, "n_neurons": 8}, data=data)
    head = model.get_layer("output")
    assert head.units == 3 and head.activation.__name__ == "sigmoid"
    assert model.loss == "binary_crossentropy"
    assert model.predict(data.x_valid[:2], verbose=0).shape == (2, 3)


def test_regression_heads_losses_and_positive_output(tmp_path: Path) -> None:
    path = write_file(_numbers(), tmp_path / "values.csv")
    two = load_file(path, target=("t1", "t2"), features=("x1", "x2", "x3"))
    assert two.task == "regression" and two.n_outputs == 2
    assert two.y_train.shape == (len(two.x_train), 2)
    head = build_model({"n_hidden": 1}, data=two).get_layer("output")
    assert head.units == 2 and head.activation.__name__ == "linear"

    one = load_file(path, target="t1", features=("x1", "x2", "x3"))
    assert one.task == "regression" and one.n_outputs == 1 and one.n_classes is None
    assert one.y_train.shape == (len(one.x_train),) and one.y_train.dtype == np.float32
    model = build_model({"n_hidden": 1}, data=one)
    assert model.get_layer("output").units == 1
    assert model.get_layer("output").activation.__name__ == "linear"
    assert model.loss == "mse"

    positive = build_model({"n_hidden": 1}, data=one, output_activation="softplus")
    assert positive.get_layer("output").activation.__name__ == "softplus"
    huber = build_model({"n_hidden": 1}, data=one, loss="huber")
    assert isinstance(huber.loss, keras.losses.Huber)
    assert build_model({"n_hidden": 1}, data=one, loss="mae").loss == "mae"


@pytest.mark.parametrize("impute", ["mean", "median"])
def test_impute_fills_with_the_training_split_statistic(tmp_path: Path, impute: str) -> None:
    raw = with_gaps()
    data = load_file(write_file(raw, tmp_path / "gaps.csv"), target="y", impute=impute)
    stat = np.mean if impute == "mean" else np.median
    train = raw.iloc[ids(data.x_train)]
    expected = float(stat(train["size"].dropna()))
    assert data.fill["size"] == pytest.approx(expected)
    assert abs(expected - float(stat(raw["size"].dropna()))) > 1e-6, "train-only, not all rows"
    assert data.sizes() == {"train": 96, "valid": 24, "test": 30}  # no row dropped

    filled = cat_missing = 0
    for x in (data.x_train, data.x_valid, data.x_test):
        rows = raw.iloc[ids(x)]
        gap = rows["size"].isna().to_numpy()
        np.testing.assert_array_equal(x[gap, 1], np.float32(data.fill["size"]))
        np.testing.assert_array_equal(x[~gap, 1], rows["size"][~gap].to_numpy(np.float32))
        no_city = rows["city"].isna().to_numpy()
        assert (x[no_city, FEATURES.index("city")] == 0).all()  # a missing category: code 0
        filled += gap.sum()
        cat_missing += no_city.sum()
    assert filled == 10 and cat_missing == 5
    assert all(v == v and v != "nan" for v in data.vocabulary["city"])  # NaN is no category


def test_impute_drop_removes_exactly_the_rows_with_gaps(tmp_path: Path) -> None:
    raw = with_gaps()
    raw.loc[30, "y"] = np.nan  # a missing target is dropped too
    data = load_file(write_file(raw, tmp_path / "gaps.csv"), target="y", impute="drop")
    kept = np.concatenate([ids(x) for x in (data.x_train, data.x_valid, data.x_test)])
    expected = raw.index[~raw.isna().any(axis=1)].tolist()
    assert sorted(kept.tolist()) == expected
    assert len(expected) == len(raw) - 16
    assert data.labels == ["bird", "cat", "dog"]
    assert not np.isnan(data.x_train).any()


def test_integer_and_float_targets_and_forced_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 120
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "zip": rng.choice([75001, 69001, 6000], n),
            "grade": np.arange(n) % 4,
            "pair": np.where(np.arange(n) % 2, 7, 3),
            "many": rng.integers(0, 100, n),
            "price": rng.uniform(0, 10, n),
        }
    )
    path = write_file(frame, tmp_path / "numbers.csv")
    features = ("x", "zip")
    grade = load_file(path, target="grade", features=features)
    assert grade.task == "multiclass" and grade.labels == [0, 1, 2, 3]
    assert all(type(v) is int for v in grade.labels)
    pair = load_file(path, target="pair", features=features)
    assert pair.task == "binary" and pair.labels == [3, 7]
    for target in ("price", "many"):
        values = load_file(path, target=target, features=features)
        assert values.task == "regression" and values.labels is None
        assert values.y_train.dtype == np.float32

    plain = load_file(path, target="grade", features=features)
    assert "zip" in plain.fill and "zip" not in plain.vocabulary
    forced = load_file(path, target="grade", features=features, categorical=("zip",))
    assert forced.vocabulary["zip"] == ["6000", "69001", "75001"]  # text, sorted as text
    assert "zip" not in forced.fill
    codes = forced.x_train[:, 1]
    assert set(codes.tolist()) <= {1.0, 2.0, 3.0}


def test_integer_target_with_a_missing_value_and_drop_is_classification(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.linspace(0, 1, 90), "y": (np.arange(90) % 3).astype(float)})
    frame.loc[4, "y"] = np.nan
    data = load_file(write_file(frame, tmp_path / "gap.csv"), target="y", impute="drop")
    assert data.task == "multiclass"


def test_numeric_category_with_a_gap_still_knows_its_integers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"x": rng.normal(size=60), "zip": rng.choice([75001, 69001], 60), "y": ["a", "b"] * 30}
    )
    frame["zip"] = frame["zip"].astype("Int64")
    frame.loc[4, "zip"] = pd.NA
    data = load_file(
        write_file(frame, tmp_path / "zips.csv"), target="y", categorical=("zip",), impute="mean"
    )
    assert data.vocabulary["zip"] == ["69001", "75001"], data.vocabulary
    x = encode_frame(data.serving_meta(), pd.DataFrame({"x": [0.0], "zip": [75001]}))
    assert x[0, 1] == 2


@pytest.mark.parametrize("name", ["animals.parquet", "animals.pq"])
def test_parquet_reads_like_csv(tmp_path: Path, name: str) -> None:
    raw = with_gaps()
    from_csv = load_file(write_file(raw, tmp_path / "animals.csv"), target="y", impute="mean")
    from_pq = load_file(write_file(raw, tmp_path / name), target="y", impute="mean")
    assert from_pq.task == from_csv.task == "multiclass"
    assert from_pq.labels == from_csv.labels
    assert from_pq.vocabulary == from_csv.vocabulary
    assert from_pq.fill == pytest.approx(from_csv.fill)
    for split in ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_pq, split), getattr(from_csv, split))


# -- B. bad data: one-line ConfigErrors naming the file, the column or key, and a fix ----------


def _base(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n).round(4),
            "b": rng.normal(size=n).round(4),
            "city": rng.choice(CITIES, n),
            "y": np.array(["cat", "dog", "bird"])[np.arange(n) % 3],
        }
    )


def _all_nan() -> pd.DataFrame:
    return _base().assign(empty=np.nan)


def _one_class() -> pd.DataFrame:
    return _base().assign(y="cat")


def _text_in_numbers() -> pd.DataFrame:
    frame = _base().astype({"a": object})
    frame.loc[[3, 7], "a"] = "unknown"
    return frame


def _gaps() -> pd.DataFrame:
    frame = _base()
    frame.loc[[3, 7], "a"] = np.nan
    frame.loc[11, "city"] = np.nan
    return frame


def _target_gap() -> pd.DataFrame:
    frame = _base()
    frame.loc[5, "y"] = np.nan
    return frame


def _two_numeric_labels() -> pd.DataFrame:
    return _base().assign(l1=[0, 1] * 30, l2=[0, 1, 2] * 20)


# (id, file name, contents, load arguments, key, whole rule, column/key the line must name)
BAD_DATA: list[tuple[str, str, Any, dict[str, Any], str, str, str]] = [
    (
        "missing-target", "data.csv", _base, {"target": "label"},
        "dataset.target", "no column 'label' in the file", "label",
    ),
    (
        "unknown-feature", "data.csv", _base, {"target": "y", "features": ("a", "nope")},
        "dataset.features", "no column 'nope' in the file", "nope",
    ),
    (
        "unknown-drop", "data.csv", _base, {"target": "y", "drop": ("gone",)},
        "dataset.drop", "no column 'gone' in the file", "gone",
    ),
    (
        "unknown-categorical", "data.csv", _base, {"target": "y", "categorical": ("zip",)},
        "dataset.categorical", "no column 'zip' in the file", "zip",
    ),
    (
        "feature-is-target", "data.csv", _base, {"target": "y", "features": ("a", "y")},
        "dataset.features", "column 'y' is both a feature and the target", "y",
    ),
    (
        "all-nan-column", "data.csv", _all_nan, {"target": "y"},
        "column 'empty'", "the column holds no value at all (every row is missing)", "empty",
    ),
    (
        "single-class", "data.csv", _one_class, {"target": "y"},
        "dataset.target", "target 'y' has a single class ('cat')", "'y'",
    ),
    (
        "text-in-numbers", "data.csv", _text_in_numbers, {"target": "y"},
        "column 'a'", "the column is numeric but 2 row(s) hold text such as 'unknown'", "'a'",
    ),
    (
        "impute-error", "data.csv", _gaps, {"target": "y"},
        "dataset.impute", "missing values in columns: a (2 rows), city (1 rows)", "city",
    ),
    (
        "target-gap-impute-mean", "data.csv", _target_gap, {"target": "y", "impute": "mean"},
        "dataset.impute", "missing values in the target: y (1 rows)", "y (1 rows)",
    ),
    (
        "binary-on-3-classes", "data.csv", _base, {"target": "y", "task": "binary"},
        "dataset.task", "task binary needs exactly 2 classes; target 'y' has 3", "'y'",
    ),
    (
        "regression-on-text", "data.csv", _base, {"target": "y", "task": "regression"},
        "dataset.task", "target 'y' is not numeric, so it cannot be a regression target", "'y'",
    ),
    (
        "multilabel-not-01", "data.csv", _two_numeric_labels,
        {"target": ("l1", "l2"), "task": "multilabel"},
        "dataset.target", "a multilabel target needs 0/1 columns", "dataset.target",
    ),
    (
        "multilabel-one-column", "data.csv", _base, {"target": "a", "task": "multilabel"},
        "dataset.target", "a multilabel task needs several 0/1 target columns", "dataset.target",
    ),
    (
        "garbage-csv", "data.csv", 'a,y\n1,2\n3,4,5,6\n', {"target": "y"},
        "dataset.path",
        "cannot read the file (ParserError: Error tokenizing data. C error: Expected 2 fields "
        "in line 3, saw 4)",
        "dataset.path",
    ),
    (
        "binary-csv", "data.csv", b"\xff\xfe\x00bin\x00ary\x80\x81\n", {"target": "y"},
        "dataset.path",
        "cannot read the file (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in "
        "position 0: invalid start byte)",
        "dataset.path",
    ),
    (
        "empty-csv", "data.csv", "", {"target": "y"},
        "dataset.path", "cannot read the file (EmptyDataError: No columns to parse from file)",
        "dataset.path",
    ),
    (
        "garbage-parquet", "data.parquet", b"\x00\x01 this is not parquet \xff" * 10,
        {"target": "y"},
        "dataset.path", "cannot read the file (ArrowInvalid: ", "dataset.path",
    ),
]  # fmt: skip


def _make_file(path: Path, contents: Any) -> Path:
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    elif isinstance(contents, str):
        path.write_text(contents)
    else:
        write_file(contents(), path)
    return path


def _check_data_error(err: ConfigError, path: Path, key: str, rule: str, mention: str) -> None:
    text = str(err)
    assert "\n" not in text, text
    assert err.source == str(path), text
    assert err.key == key, text
    if rule.endswith(" "):  # a prefix: the rest quotes the reader's message
        assert err.rule.startswith(rule), text
    else:
        assert err.rule == rule, text
    assert err.fix, text
    assert text.startswith(f"{path}: {key}: {err.rule}. Fix: "), text
    assert mention in text, (mention, text)


@pytest.mark.parametrize(
    ("name", "contents", "kwargs", "key", "rule", "mention"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_DATA],
)
def test_bad_data_is_one_line_naming_file_and_column(
    tmp_path: Path, name, contents, kwargs, key, rule, mention
) -> None:
    path = _make_file(tmp_path / name, contents)
    with pytest.raises(ConfigError) as e:
        load_file(path, **kwargs)
    _check_data_error(e.value, path, key, rule, mention)


def test_bad_data_fixes_say_what_to_do(tmp_path: Path) -> None:
    fixes = {}
    for case_id, name, contents, kwargs, *_ in BAD_DATA:
        path = _make_file(tmp_path / f"{case_id}-{name}", contents)
        with pytest.raises(ConfigError) as e:
            load_file(path, **kwargs)
        fixes[case_id] = e.value.fix
    assert fixes["missing-target"] == "use one of its columns: a, b, city, y"
    assert fixes["all-nan-column"] == "add it to dataset.drop: [empty]"
    assert fixes["text-in-numbers"] == (
        "clean those rows, or treat it as a category: categorical: [a]"
    )
    assert fixes["impute-error"] == "set dataset.impute to mean, median (features) or drop (rows)"
    assert fixes["target-gap-impute-mean"] == "set dataset.impute: drop, or fill the target"
    assert fixes["binary-on-3-classes"] == "set task: multiclass"
    assert fixes["garbage-parquet"] == "give a readable CSV (with a header row) or Parquet file"


def test_absent_file_and_pandas_na_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_file(tmp_path / "absent.csv", target="y")
    _check_data_error(e.value, tmp_path / "absent.csv", "dataset.path", "data file not found", "")
    # pandas reads 'n/a' as missing, so such a column is a gap, not text.
    frame = _base().astype({"a": object})
    frame.loc[[3, 7], "a"] = "n/a"
    path = write_file(frame, tmp_path / "na.csv")
    with pytest.raises(ConfigError) as e:
        load_file(path, target="y")
    _check_data_error(
        e.value, path, "dataset.impute", "missing values in columns: a (2 rows)", "a (2 rows)"
    )


def _three_rows() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.5, 2.5, 3.25]})


def _lonely_class() -> pd.DataFrame:
    return _base().assign(y=["common"] * 59 + ["lonely"])


@pytest.mark.parametrize(
    ("contents", "key"),
    [
        pytest.param(_three_rows, "dataset.validation", id="three-rows"),
        pytest.param(_lonely_class, "dataset.target", id="single-row-class"),
    ],
)
def test_split_errors_name_the_data_file(tmp_path: Path, contents, key) -> None:
    path = _make_file(tmp_path / "data.csv", contents)
    with pytest.raises(ConfigError) as e:
        load_file(path, target="y")
    assert e.value.key == key and "\n" not in str(e.value)
    assert e.value.source == str(path), str(e.value)


def test_split_errors_rule_and_key(tmp_path: Path) -> None:
    """What the split errors say: the rule and the key."""
    path = _make_file(tmp_path / "few.csv", _three_rows)
    with pytest.raises(ConfigError) as e:
        load_file(path, target="y")
    assert e.value.key == "dataset.validation"
    assert e.value.rule == "a validation split of 0.2 leaves 2 of 2 rows for training"
    assert e.value.fix == "use a smaller split, or more rows"
    path = _make_file(tmp_path / "lonely.csv", _lonely_class)
    with pytest.raises(ConfigError) as e:
        load_file(path, target="y")
    assert e.value.key == "dataset.target" and "\n" not in str(e.value)
    assert e.value.rule.startswith(
        "a stratified test split of 12 of 60 rows needs at least 2 rows of every class"
    )
    assert "has 1 row(s), 2 classes)" in e.value.rule


def test_stratification_error_names_the_class_label(tmp_path: Path) -> None:
    path = _make_file(tmp_path / "lonely.csv", _lonely_class)
    with pytest.raises(ConfigError) as e:
        load_file(path, target="y")
    assert "class 'lonely' has 1 row(s)" in e.value.rule, e.value.rule


# -- C. through the command line ---------------------------------------------------------------


CLI_BAD_DATA = {
    "missing-target": ("label", {}),
    "all-nan-column": ("empty", {}),
    "single-class": ("'y'", {}),
    "text-in-numbers": ("column 'a'", {}),
    "impute-error": ("city (1 rows)", {}),
    "target-gap-impute-mean": ("y (1 rows)", {"impute": "mean"}),
    "binary-on-3-classes": ("'y'", {"task": "binary"}),
    "garbage-csv": ("dataset.path", {}),
}


@pytest.mark.parametrize("case_id", list(CLI_BAD_DATA))
def test_cli_bad_data_exits_2_and_creates_nothing(make_experiment, workdir, case_id) -> None:
    case = next(c for c in BAD_DATA if c[0] == case_id)
    _, name, contents, kwargs, key, rule, _ = case
    mention, extra = CLI_BAD_DATA[case_id]
    data_file = _make_file(workdir / name, contents)
    dataset = {"path": name, "target": kwargs["target"], **extra}
    exp = make_experiment("bad", dataset=dataset)
    result = runner.invoke(app, ["run", str(exp)])
    line = one_line_error(result, str(data_file), key, rule, mention, "Fix: ")
    assert "bad.yaml" not in line  # the data file is the source, not the experiment
    nothing_created(workdir)


def _two_classes(n: int = 60) -> pd.DataFrame:
    return _base(n).assign(y=np.where(np.arange(n) % 2, "yes", "no"))


@pytest.mark.parametrize(
    ("data", "changes", "fragments"),
    [
        pytest.param(
            _base, {"dataset": {"name": "digits", "path": "data.csv", "target": "y"}},
            ["bad.yaml", "dataset:", "give either dataset.name or dataset.path, not both"],
            id="name-and-path",
        ),
        pytest.param(
            _base, {"dataset": {"path": "data.csv"}},
            ["bad.yaml", "dataset.target", "a data file needs its target column"],
            id="path-without-target",
        ),
        pytest.param(
            _base, {"dataset": {"path": "data.txt", "target": "y"}},
            ["bad.yaml", "dataset.path", "unsupported file type '.txt'"],
            id="txt-file",
        ),
        pytest.param(
            _base, {"dataset": {"name": "digits", "target": "y"}},
            ["bad.yaml", "dataset.target",
             "dataset.target is for data files (path:), not the registered digits"],
            id="target-with-registered-name",
        ),
        pytest.param(
            _base, {"dataset": {"path": "missing.csv", "target": "y"}},
            ["bad.yaml", "dataset.path", "missing.csv' not found"],
            id="absent-file",
        ),
        pytest.param(
            _base,
            {
                "dataset": {"path": "data.csv", "target": "y"},
                "objective": {"metric": "val_auc", "direction": "maximize"},
            },
            ["bad.yaml", "objective.metric",
             "'val_auc' is not a validation metric of a multiclass task",
             "Fix: use one of val_loss, val_accuracy"],
            id="val_auc-on-multiclass-file",
        ),
        pytest.param(
            _two_classes,
            {"dataset": {"path": "data.csv", "target": "y"}, "training__loss": "huber"},
            ["bad.yaml", "training.loss",
             "training.loss applies to regression only; this is a binary task"],
            id="huber-on-binary-file",
        ),
        pytest.param(
            _base,
            {
                "dataset": {"path": "data.csv", "target": "y", "task": "multiclass"},
                "training__loss": "huber",
            },
            ["bad.yaml", "training.loss",
             "training.loss applies to regression only; this is a multiclass task"],
            id="huber-on-declared-multiclass",
        ),
    ],
)  # fmt: skip
def test_cli_dataset_config_errors(make_experiment, workdir, data, changes, fragments) -> None:
    write_file(data(), workdir / "data.csv")
    write_file(data(), workdir / "data.txt")
    exp = make_experiment("bad", **changes)
    result = runner.invoke(app, ["run", str(exp)])
    one_line_error(result, *fragments)
    nothing_created(workdir)


# -- D. end to end: a CSV in, the logged model takes raw rows and returns the labels ------------


def test_cli_run_on_a_csv_logs_a_model_that_takes_raw_rows(make_experiment, workdir) -> None:
    import mlflow

    rng = np.random.default_rng(7)
    n = 300
    x = rng.normal(size=(n, 4))
    city = rng.choice(CITIES, n).astype(object)
    city[rng.choice(n, 8, replace=False)] = None
    score = x[:, 0] + x[:, 1] + 1.5 * (city == "paris")
    frame = pd.DataFrame(
        {
            "f1": x[:, 0], "f2": x[:, 1], "f3": x[:, 2], "f4": x[:, 3],
            "city": city, "y": np.where(score > 0.5, "yes", "no"),
        }
    )  # fmt: skip
    frame.loc[rng.choice(n, 5, replace=False), "f2"] = np.nan
    frame.to_csv(workdir / "data.csv", index=False)
    exp = make_experiment(
        "csv",
        dataset={"path": "data.csv", "target": "y", "impute": "mean"},
        objective={"metric": "val_auc", "direction": "maximize"},
        study__n_trials=2,
        training__max_epochs=3,
    )
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    assert "trial   0" in result.stdout and "trial   1" in result.stdout

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow_runs(workdir, "csv")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    metrics = parents[0].data.metrics
    assert 0 <= metrics["test_auc"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["best_value"] == pytest.approx(max(
        r.data.metrics["objective"] for r in runs if r is not parents[0]
    ))  # fmt: skip

    exp_id = experiment_id(workdir, "csv")
    models = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert len(models) == 1 and models[0].source_run_id == parents[0].info.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")

    raw = pd.read_csv(workdir / "data.csv")
    gaps = raw[raw["city"].isna() | raw["f2"].isna()]
    rows = pd.concat([gaps, raw.head(10)]).drop(columns="y")
    rows = rows.assign(extra="must be ignored").reset_index(drop=True)
    rows.loc[0, "city"] = "tokyo"  # a city never seen: the unknown code
    assert rows["city"].isna().any() and rows["f2"].isna().any()
    labels = loaded.predict(rows)
    assert len(labels) == len(rows)
    assert set(np.asarray(labels).tolist()) <= {"no", "yes"}
    probs = loaded.predict(rows, params={"output": "probabilities"})
    assert isinstance(probs, pd.DataFrame) and list(probs.columns) == ["no", "yes"]
    assert len(probs) == len(rows) and not probs.isna().any().any()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.asarray(labels).tolist() == np.where(probs["yes"] >= 0.5, "yes", "no").tolist()
