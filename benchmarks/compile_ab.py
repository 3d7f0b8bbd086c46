"""Build and compile of one job, A/B: before and after the two compile-side changes of 2026-12-02.

One job of a shipped experiment in this process, with XLA's compilation events counted
(``jax.monitoring``), on JAX. ``before`` puts back what the job did at c49af1c: the training rows
as they are (a last, smaller batch: a second compiled train step per model) and TensorFlow
imported at start (Keras imported it anyway, to seed it and when saving). ``after`` is the code
as it is. Prints one JSON line: job seconds, the job's own build / compile / fit seconds, the
models built and build + compile seconds per new model, XLA compilations and their seconds,
whether TensorFlow was loaded, and peak RSS.

Run each arm in a fresh process with an empty compilation cache, alternating, e.g.::

    for i in 1 2 3; do for arm in before after; do
      KERAS_BACKEND=jax TUNING_CACHE_DIR=$(mktemp -d) python benchmarks/compile_ab.py $arm
    done; done >> benchmarks/results/compile-ab-quickstart.jsonl

Extra ``key=json`` arguments after the experiment's name override its config.
"""

from __future__ import annotations

import time

START = time.time()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.monitoring  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
compiles: list[float] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: compiles.append(secs) if "backend_compile" in name else None
)

import tuning.backend  # noqa: E402
import tuning.train  # noqa: E402


def main() -> None:
    arm = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "quickstart"
    if arm == "before":
        tuning.train.full_batches = lambda x, y, b: (x, y)

        def import_tensorflow() -> None:
            with tuning.backend._native_stderr_held():
                import tensorflow  # noqa: F401

        tuning.backend.import_tensorflow_quietly = import_tensorflow
    elif arm != "after":
        raise SystemExit("arm: before or after")
    from tuning.config import load_experiment
    from tuning.job import run_job
    from tuning.trial import Trainer

    built = [0]
    build = Trainer.build

    def counted_build(self: Trainer, *args: object, **kwargs: object) -> object:
        built[0] += 1
        return build(self, *args, **kwargs)  # type: ignore[arg-type]

    Trainer.build = counted_build  # type: ignore[method-assign]

    folder = tempfile.mkdtemp(prefix="compile-ab-")
    os.chdir(folder)
    overrides: list[tuple[str, object]] = [
        ("study.storage", f"sqlite:///{folder}/optuna.db"),
        ("tracking.uri", f"sqlite:///{folder}/mlflow.db"),
    ]
    for item in sys.argv[3:]:
        key, value = item.split("=", 1)
        overrides.append((key, json.loads(value)))
    exp = load_experiment(ROOT / "experiments" / f"{name}.yaml", overrides=overrides)
    result = run_job(exp, say=lambda _: None)
    t = result.timings
    job = time.time() - START
    print(
        json.dumps(
            {
                "arm": arm,
                "experiment": name,
                "job_s": round(job, 2),
                "build": round(t["build"], 2),
                "compile": round(t["compile"], 2),
                "fit": round(t["fit"], 2),
                "build_compile_share": round((t["build"] + t["compile"]) / job, 3),
                "models": built[0],
                "build_compile_s_per_model": round(
                    (t["build"] + t["compile"]) / max(built[0], 1), 3
                ),
                "xla_compiles": len(compiles),
                "xla_compile_s": round(sum(compiles), 2),
                "tensorflow_loaded": "tensorflow" in sys.modules,
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "best_value": result.best_value,
            }
        )
    )


if __name__ == "__main__":
    main()
