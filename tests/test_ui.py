"""What a person looks at after a job: MLflow's UI, optuna-dashboard, and the served champion.

Every server here is started on 127.0.0.1 on a free port, in its own process group, and stopped
(SIGTERM, then SIGKILL after a timeout) whatever the test's outcome. The browser test drives a
headless Chromium through Selenium; its screenshots land in ``tmp_path`` and, when
``$TUNING_TEST_ARTIFACTS`` is set, are copied there for CI to keep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from conftest import experiment_id, mlflow_client, mlflow_runs, require
from typer.testing import CliRunner

from tuning.cli import app

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]


# ---------------------------------------------------------------- helpers


def _run_job(exp: Path) -> str:
    result = CliRunner().invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    return result.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    """The test's environment, with this interpreter's scripts first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Terminate the process group we started (servers fork workers), then kill it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # workers that outlived their parent, or a parent that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


@contextmanager
def _server(
    args: list[str], *, url: str, log: Path, cwd: Path, env: dict[str, str], timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ``url`` answers 200, yield it, always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"{' '.join(args[:4])}… exited with {proc.returncode} before answering:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{url} did not answer within {timeout:.0f}s:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.5)
        yield proc
    finally:
        _stop(proc)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


def _post_json(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (loopback)
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        pytest.fail(f"POST {url} -> {e.code}: {e.read().decode(errors='replace')[:3000]}")


def _browser_tools() -> tuple[str, str]:
    """Chromium and chromedriver; skipped when missing on a developer's machine, fails in CI."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    ) or shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = " and ".join(
        name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found
    )
    require(False, missing, "apt-get install chromium chromium-driver")
    raise AssertionError("unreachable: require fails or skips")


def _require(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{package} is not installed: pip install -e '.[test]'")


# ---------------------------------------------------------------- MLflow UI in Chromium


# What MLflow 3.17.2's UI is made of (found by reading its DOM in Chromium): the runs table is an
# AG Grid, one cell per column with a `col-id`; child runs are folded under their parent, whose
# Run Name cell holds the expand button; parameter columns are hidden until picked in "Columns";
# the run page's "Model metrics" tab has one card per metric with a Plotly chart, rendered lazily.
RUN_NAME_CELL = '[col-id="attributes.`Run Name`"]'
RUN_EXPANDER = "//*[@col-id='attributes.`Run Name`'][contains(., '{}')]//button"
PARAM_CELL = '[col-id="params.`{}`"]'
COLUMNS_BUTTON = '[data-testid="column-selection-dropdown"]'
COLUMNS_SEARCH = 'input[placeholder="Search columns"]'
COLUMN_OPTION = "//span[contains(@class,'tree-title')][normalize-space()='{}']"
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'
MODEL_METRICS_TAB = "//*[@role='tab'][normalize-space()='Model metrics']"  # a Radix tab button
CHART_SEARCH = 'input[placeholder="Search metric charts"]'
CHART_CARD = '[data-testid="experiment-view-compare-runs-card"]'
CHART_LINE = "svg.main-svg path.js-line"  # a Plotly line trace
# The compare-runs page: a "Scatter Plot" tab with X-axis and Y-axis selects (params, metrics);
# its chart is a WebGL Plotly scatter, so its points are read from the Plotly graph's data.
SCATTER_TAB = "//*[@role='tab'][normalize-space()='Scatter Plot']"
AXIS_OPTION = "(//*[@role='option'][normalize-space()='{}'])[last()]"
PLOTLY_TRACES = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(g => (g.data || []).map(
  t => ({x: t.x, y: t.y, text: t.text,
         titles: [g.layout.xaxis.title.text, g.layout.yaxis.title.text]})));
"""


class _Shots:
    """Screenshots and page sources into tmp_path, copied to $TUNING_TEST_ARTIFACTS if set."""

    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        self.keep = os.environ.get("TUNING_TEST_ARTIFACTS")

    def take(self, name: str) -> None:
        files = [self.folder / f"{name}.png", self.folder / f"{name}.html"]
        self.driver.save_screenshot(str(files[0]))
        files[1].write_text(self.driver.page_source)
        if self.keep:
            Path(self.keep).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, Path(self.keep) / f"test_ui-{f.name}")


def test_mlflow_ui_shows_the_job_its_trials_and_their_charts(
    make_experiment, workdir: Path, tmp_path: Path
) -> None:
    chromium, chromedriver = _browser_tools()
    _require("selenium", "selenium")
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    exp = make_experiment("ui", study__n_trials=2, training__max_epochs=2)
    out = _run_job(exp)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    exp_id = experiment_id(workdir, "ui")
    runs = {r.info.run_name: r for r in mlflow_runs(workdir, "ui")}
    (parent_name,) = [n for n in runs if n.startswith("ui-")]
    assert sorted(runs) == sorted([parent_name, "trial-0", "trial-1"])
    link = f"#/experiments/{exp_id}?workflowType=machine_learning"
    assert link in out  # the job prints the link this test opens

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    shots_dir = tmp_path / "screenshots"
    shots_dir.mkdir()
    server = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri, "--default-artifact-root", str(workdir / "mlruns"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = _env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no background job runners
    log = tmp_path / "mlflow-server.log"
    with _server(server, url=f"{base}/health", log=log, cwd=workdir, env=env):
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
        shots = _Shots(driver, shots_dir)
        # React re-renders as data arrives: an element found may go stale; then look again.
        wait = WebDriverWait(
            driver, 60, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException]
        )

        def until(condition: Any, what: str) -> Any:
            try:
                return wait.until(condition)
            except TimeoutException:
                pytest.fail(f"MLflow UI: {what} within 60 s; screenshots in {shots_dir}")

        def css(selector: str) -> list[Any]:
            return driver.find_elements(By.CSS_SELECTOR, selector)

        def close_assistant() -> None:
            """MLflow 3.17 opens an "MLflow Assistant" panel over a third of the page."""
            with contextlib.suppress(StaleElementReferenceException):  # cosmetic only
                for button in css(ASSISTANT_CLOSE):
                    if button.is_displayed():
                        button.click()

        def click(by: str, locator: str, what: str) -> None:
            """Click once it can be clicked; a stale element is looked up again."""

            def done(d: Any) -> bool:
                d.find_element(by, locator).click()
                return True

            until(done, what)

        def run_names(_: Any = None) -> dict[str, str]:
            """Run name -> run id, from the links in the Run Name column."""
            links = driver.find_elements(By.CSS_SELECTOR, f"{RUN_NAME_CELL} a[href*='/runs/']")
            return {a.text: a.get_attribute("href").rsplit("/runs/", 1)[1] for a in links}

        try:
            # 1. The runs table, as the printed link opens it: the parent, then its trials.
            driver.get(f"{base}/{link}")
            until(lambda d: parent_name in run_names(), f"no parent run {parent_name!r}")
            close_assistant()
            shots.take("1-runs-table")
            if "trial-0" not in run_names():  # children are folded under their parent
                expander = RUN_EXPANDER.format(parent_name)
                click(By.XPATH, expander, "no expand button in the parent's Run Name cell")
            shown = until(
                lambda d: (names := run_names()).keys() >= {"trial-0", "trial-1"} and names,
                "child runs trial-0 and trial-1 not shown under the parent",
            )
            assert shown == {name: run.info.run_id for name, run in runs.items()}

            # Parameter columns are hidden by default: add learning_rate with "Columns".
            click(By.CSS_SELECTOR, COLUMNS_BUTTON, "no Columns button above the runs table")
            search = until(lambda d: d.find_element(By.CSS_SELECTOR, COLUMNS_SEARCH),
                           "no search box in the Columns menu")  # fmt: skip
            search.send_keys("learning_rate")
            option = COLUMN_OPTION.format("learning_rate")
            click(By.XPATH, option, "no learning_rate parameter in the Columns menu")
            search.send_keys(Keys.ESCAPE)
            cells = PARAM_CELL.format("learning_rate")
            expected = {runs[f"trial-{i}"].data.params["learning_rate"] for i in (0, 1)}
            values = until(
                lambda d: (texts := {c.text for c in css(cells)}) >= expected and texts,
                "the learning_rate column does not show both trials' values",
            )
            assert "learning_rate" in values  # its header
            shots.take("2-runs-table-with-trials")

            # 2. One trial's page, then its Model metrics tab: a val_accuracy line chart.
            trial_page = f"#/experiments/{exp_id}/runs/{runs['trial-0'].info.run_id}"
            driver.get(f"{base}/{trial_page}")
            wanted = ("trial-0", "val_accuracy", parent_name)  # its name, metric, parent run
            until(
                lambda d: all(w in d.find_element(By.TAG_NAME, "body").text for w in wanted),
                f"trial-0's page does not show {wanted}",
            )
            close_assistant()
            shots.take("3-trial-overview")
            click(By.XPATH, MODEL_METRICS_TAB, "no Model metrics tab on the run page")
            charts = until(lambda d: d.find_element(By.CSS_SELECTOR, CHART_SEARCH),
                           "the Model metrics tab did not open")  # fmt: skip
            assert driver.current_url.endswith(f"{trial_page}/model-metrics")
            charts.send_keys("val_accuracy")  # cards render lazily: keep only this one in view

            def val_accuracy_chart(_: Any) -> str | None:
                for card in css(CHART_CARD):
                    title = card.text.split("\n")[0]
                    lines = card.find_elements(By.CSS_SELECTOR, CHART_LINE)
                    if title == "val_accuracy" and any(p.get_attribute("d") for p in lines):
                        return str(card.text)
                return None

            card = until(val_accuracy_chart, "no val_accuracy line chart on Model metrics")
            shots.take("4-trial-val-accuracy-chart")
            assert "trial-0 (val_accuracy)" in card  # the legend names the run and metric
            assert "Step" in card  # per-epoch values, plotted against the step (epoch)

            # 3. One figure against another across trials (issue 25: an objective against a
            # size or speed): the trials compared, Scatter Plot, n_params across, val_accuracy
            # up; a point per trial at its run's metrics, named by the run in its hover text.
            ids = json.dumps([runs[f"trial-{i}"].info.run_id for i in (0, 1)])
            driver.get(f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([exp_id])}")
            click(By.XPATH, SCATTER_TAB, "no Scatter Plot tab on the compare-runs page")
            close_assistant()
            for axis, metric in (("x", "n_params"), ("y", "val_accuracy")):
                click(By.ID, f"{axis}-axis-selector", f"no {axis.upper()}-axis selector")
                click(By.XPATH, AXIS_OPTION.format(metric), f"no {metric} on the {axis} axis")

            def scatter(_: Any) -> Any:
                traces = driver.execute_script(PLOTLY_TRACES)
                return (
                    traces
                    if traces and traces[0]["titles"] == ["n_params", "val_accuracy"]
                    else None
                )

            (trace,) = until(scatter, "no scatter of val_accuracy against n_params")
            shots.take("5-trials-val-accuracy-against-n-params")
            points = {
                text.split("</b>")[0].removeprefix("<b>"): (x, y)
                for x, y, text in zip(trace["x"], trace["y"], trace["text"], strict=True)
            }
            assert points == {
                f"trial-{i}": (
                    runs[f"trial-{i}"].data.metrics["n_params"],
                    pytest.approx(runs[f"trial-{i}"].data.metrics["val_accuracy"]),
                )
                for i in (0, 1)
            }
        except BaseException:
            with contextlib.suppress(Exception):  # the browser may be what failed
                shots.take("failure")
            raise
        finally:
            driver.quit()


# ---------------------------------------------------------------- optuna-dashboard


def test_optuna_dashboard_serves_the_study(make_experiment, workdir: Path, tmp_path: Path) -> None:
    _require("optuna_dashboard", "optuna-dashboard")
    exp = make_experiment("dash", study__n_trials=2, training__max_epochs=2)
    _run_job(exp)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    import optuna

    study = optuna.load_study(study_name="dash", storage=storage)
    assert len(study.trials) == 2

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env()
    script = shutil.which("optuna-dashboard", path=env["PATH"])  # the package has no __main__
    assert script, "the optuna-dashboard command is not on PATH: pip install -e '.[test]'"
    dashboard = [
        script, storage,
        "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref", "--quiet",
    ]  # fmt: skip
    with _server(dashboard, url=f"{base}/api/meta", log=tmp_path / "dashboard.log", cwd=workdir,
                 env=env):  # fmt: skip
        summaries = _get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["dash"]
        (summary,) = summaries
        assert summary["directions"] == ["maximize"]
        detail = _get_json(f"{base}/api/studies/{summary['study_id']}")
        assert detail["name"] == "dash"
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1]
        assert all(t["state"] == "Complete" for t in trials)
        for served, trial in zip(trials, study.trials, strict=True):
            assert served["values"] == [trial.value]
            params = {p["name"]: p["param_external_value"] for p in served["params"]}
            assert params == {k: str(v) for k, v in trial.params.items()}
            # per-epoch val_accuracy, reported for pruning, shows as intermediate values
            assert len(served["intermediate_values"]) == len(trial.intermediate_values) >= 1
        # each trial names its MLflow child run, and that run exists
        client = mlflow_client(workdir)
        for served in trials:
            attrs = {a["key"]: a["value"] for a in served["user_attrs"]}
            run = client.get_run(attrs["mlflow_run_id"])
            assert run.info.run_name == f"trial-{served['number']}"
        assert detail["best_trials"][0]["number"] == study.best_trial.number
        with urllib.request.urlopen(f"{base}/dashboard", timeout=30) as resp:  # noqa: S310
            assert resp.status == 200 and b"<html" in resp.read().lower()


# ---------------------------------------------------------------- mlflow models serve


def test_mlflow_models_serve_the_champion(make_experiment, workdir: Path, tmp_path: Path) -> None:
    exp = make_experiment(
        "served",
        study__n_trials=1,
        training__max_epochs=2,
        tracking={"uri": "sqlite:///mlflow.db", "register_as": "digits-mlp"},
    )
    out = _run_job(exp)
    assert "registered digits-mlp v1, now @champion" in out
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from sklearn.datasets import load_digits

    rows = load_digits(as_frame=True).data.iloc[:10]  # raw pixels 0..16, original column names
    mlflow.set_tracking_uri(uri)
    expected = mlflow.pyfunc.load_model("models:/digits-mlp@champion").predict(rows)
    assert expected.shape == (10,)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits-mlp@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with _server(serve, url=f"{base}/ping", log=tmp_path / "serve.log", cwd=workdir,
                 env=_env(MLFLOW_TRACKING_URI=uri), timeout=120):  # fmt: skip
        split = {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}
        served = _post_json(f"{base}/invocations", {"dataframe_split": split})["predictions"]
        assert np.array_equal(np.asarray(served), np.asarray(expected)), (served, expected)

        body = {"dataframe_split": split, "params": {"output": "probabilities"}}
        probs = _post_json(f"{base}/invocations", body)["predictions"]
        if probs and isinstance(probs[0], dict):  # a DataFrame comes back as records
            probs = [list(r.values()) for r in probs]
        probs = np.asarray(probs, dtype=float)
        assert probs.shape == (10, 10)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert np.array_equal(probs.argmax(axis=1), np.asarray(expected))
