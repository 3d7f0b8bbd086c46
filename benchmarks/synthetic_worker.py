"""The ``tuning`` command with trials that sleep instead of training: for measuring workers.

Runs the real command line (:func:`tuning.cli.main`) with ``Trainer.build`` and
``Trainer.train`` replaced by the stand-ins of ``growth.py``, except that every epoch
first sleeps ``$TUNING_SYNTHETIC_EPOCH_S`` seconds (default 0.2: a 5-epoch trial sleeps 1 s).
Each epoch then calls the same ``on_epoch`` hook Keras would (Optuna's report and pruning, the
MLflow epoch metrics), so the study and the tracking store see what a real job writes while the
CPU stays idle. The script also names itself in ``$TUNING_WORKER_SCRIPT``, so that
``run ... --workers N`` starts N workers of the same kind through the real
:func:`tuning.workers.run_workers`::

    python benchmarks/synthetic_worker.py run EXPERIMENT.yaml --workers 4

Keras, JAX and the dataset are still imported and loaded by each worker, as in a real job.

For comparison only, ``study.storage`` may also be ``journal:///FILE`` here (relative to the
current folder, as ``sqlite:///``): the study then lives in Optuna's ``JournalStorage`` on a
``JournalFileBackend`` with Optuna's default lock, built where ``open_study`` builds its
``RDBStorage`` (:func:`allow_journal`). The tool itself does not accept that URL, and Optuna 5's
``JournalStorage`` has no heartbeat: a dead worker's trial would stay RUNNING.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from growth import StandInModel, synthetic_build, synthetic_train  # noqa: E402

EPOCH_SECONDS_ENV = "TUNING_SYNTHETIC_EPOCH_S"
JOURNAL = "journal:///"


def sleeping_train(
    self: Any,
    model: StandInModel,
    params: dict[str, Any],
    *,
    max_epochs: int,
    on_epoch: Callable[[int, Mapping[str, float]], None],
    carry: Any = None,
    keep_last: bool = False,
) -> Any:
    """Stand-in for ``Trainer.train``: growth's synthetic epochs, each after a sleep (no trial
    is continued: ``carry`` and ``keep_last`` are for the real trainer)."""
    seconds = float(os.environ.get(EPOCH_SECONDS_ENV, "0.2"))

    def slow(epoch: int, logs: Mapping[str, float]) -> None:
        time.sleep(seconds)
        on_epoch(epoch, logs)

    return synthetic_train(self, model, params, max_epochs=max_epochs, on_epoch=slow)


def allow_journal() -> None:
    """Let ``study.storage`` name a journal file: ``journal:///optuna.log`` (this process only).

    ``optuna.storages.RDBStorage``, which ``tuning.storage.open_storage`` calls, becomes a subclass
    whose constructor returns a ``JournalStorage`` for a journal URL (the heartbeat options are
    dropped: it has none) and an ordinary ``RDBStorage`` otherwise; and the storage check of
    ``tuning.config`` lets a journal URL through when its folder exists.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from tuning import config, job
    from tuning.errors import ConfigError

    rdb = optuna.storages.RDBStorage
    if rdb.__name__ == "JournalOrRDBStorage":
        return

    class JournalOrRDBStorage(rdb):  # type: ignore[misc,valid-type]
        def __new__(cls, url: str | None = None, *args: Any, **kwargs: Any) -> Any:
            if url is not None and url.startswith(JOURNAL):
                path = Path(url.removeprefix(JOURNAL)).resolve()  # reopened by name later
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
            return super().__new__(cls)

    def check_storage(exp: Any) -> None:
        url = exp.study.storage
        if not url.startswith(JOURNAL):
            original(exp)
        elif not Path(url.removeprefix(JOURNAL)).resolve().parent.is_dir():
            raise ConfigError(f"no folder for {url!r}", key="study.storage")

    original = config.check_storage
    optuna.storages.RDBStorage = JournalOrRDBStorage  # type: ignore[misc]
    config.CHECKS[config.CHECKS.index(original)] = check_storage
    server_check = job.check_study_storage  # a journal file is no database server to ask

    def check_study_storage(url: str, **kwargs: Any) -> None:
        if not url.startswith(JOURNAL):
            server_check(url, **kwargs)

    job.check_study_storage = check_study_storage  # type: ignore[assignment]


def main() -> None:
    """Patch the trial's Keras part, make workers run this script too, then run ``tuning``."""
    from tuning.cli import main as tuning_main
    from tuning.trial import Trainer
    from tuning.workers import WORKER_SCRIPT_ENV

    os.environ[WORKER_SCRIPT_ENV] = str(Path(__file__).resolve())
    allow_journal()
    Trainer.build = synthetic_build  # type: ignore[method-assign]
    Trainer.train = sleeping_train  # type: ignore[method-assign]
    tuning_main()


if __name__ == "__main__":
    main()
