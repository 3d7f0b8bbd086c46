"""Which Keras backend trains, and where: the one module that knows about backends and devices.

Owns the choice of the Keras backend (``training.backend``: ``auto`` picks ``$KERAS_BACKEND``
when the user set it, else the fastest one installed, in the order measured in
``benchmarks/RESULTS.md``), made before anything imports keras; the process-wide settings that
must exist before a backend starts (quiet TensorFlow logs, GPU memory growth on TensorFlow, no
75 % preallocation and a persistent compilation cache on JAX); a description of the backend and
the devices for the parent run's tags; and the pip requirements of a model trained here. This
is the only module allowed TensorFlow-, JAX- or torch-specific calls; model and training code
use ``keras`` alone, so every backend runs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tuning.errors import ConfigError

__all__ = [
    "BACKENDS",
    "FASTEST_FIRST",
    "configure",
    "current",
    "import_tensorflow_quietly",
    "installed",
    "pip_requirements",
    "prepare_environment",
    "release",
    "select",
]

BACKENDS = ("jax", "tensorflow", "torch")
# What ``auto`` picks, first installed wins: JAX fits this project's MLPs 1.2-3.7x faster than
# TensorFlow on CPU and keeps memory flat over long studies (benchmarks/RESULTS.md, "Backends").
FASTEST_FIRST = ("jax", "tensorflow", "torch")
# What to install for each backend (the CPU wheels; the README names the GPU extras).
_INSTALL = {
    "jax": "pip install jax",
    "tensorflow": "pip install tensorflow",
    "torch": "pip install torch",
}


def installed(name: str) -> bool:
    """Whether the backend's package can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def current() -> str | None:
    """The backend of the keras already imported in this process, if any."""
    if "keras" not in sys.modules:
        return None
    import keras

    return str(keras.backend.backend())


def select(requested: str = "auto", *, source: str | None = None) -> str:
    """Choose the Keras backend and fix it (``$KERAS_BACKEND``) before keras is imported.

    ``requested`` is ``training.backend``: a backend's name is used as it is; ``auto`` takes
    ``$KERAS_BACKEND`` if the user set it, else the first installed of :data:`FASTEST_FIRST`.
    Once keras is imported its backend cannot change: ``auto`` then keeps it, a name that
    differs is an error.

    Args:
        requested: ``auto``, ``jax``, ``tensorflow`` or ``torch``.
        source: The experiment file, for error messages.

    Returns:
        The backend that will train.

    Raises:
        ConfigError: the backend asked for is not installed, or keras already runs on another.
    """
    live = current()
    if live is not None:
        if requested not in ("auto", live):
            raise ConfigError(
                f"Keras already runs on {live!r} in this process, not {requested!r}",
                source=source,
                key="training.backend",
                fix=f"run the job in a new process, or set training.backend: {live}",
            )
        return live
    if requested != "auto":
        chosen, key = requested, "training.backend"
    elif os.environ.get("KERAS_BACKEND"):
        chosen, key = os.environ["KERAS_BACKEND"].strip().lower(), "KERAS_BACKEND"
        if chosen not in BACKENDS:
            raise ConfigError(
                f"$KERAS_BACKEND is {chosen!r}; expected one of {', '.join(BACKENDS)}",
                source="environment",
                key="KERAS_BACKEND",
                fix="unset it to let training.backend: auto choose, or name a backend",
            )
    else:
        found = [b for b in FASTEST_FIRST if installed(b)]
        if not found:
            raise ConfigError(
                "no Keras backend is installed",
                source=source,
                key="training.backend",
                fix=f"{_INSTALL['jax']} (or tensorflow, or torch)",
            )
        chosen, key = found[0], "training.backend"
    if not installed(chosen):
        raise ConfigError(
            f"the Keras backend {chosen!r} is not installed",
            source=source if key == "training.backend" else "environment",
            key=key,
            fix=f"{_INSTALL[chosen]}, or choose another backend (installed: "
            f"{', '.join(b for b in BACKENDS if installed(b)) or 'none'})",
        )
    os.environ["KERAS_BACKEND"] = chosen
    return chosen


def prepare_environment() -> None:
    """Set environment variables that must exist before TensorFlow or JAX is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide C++ log lines (errors raise)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: allocate as needed


def cache_dir() -> Path:
    """Where compiled XLA programs are kept between trials and jobs ($TUNING_CACHE_DIR)."""
    env = os.environ.get("TUNING_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuning"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what native code writes to file descriptor 2; show it only if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                held.seek(0)
                os.write(2, held.read())
                raise
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """On TensorFlow: import it without its start-up lines on stderr. Elsewhere: keep it out.

    On the TensorFlow backend: TensorFlow 2.21 writes its oneDNN and "no CUDA driver" notices
    through Abseil before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them;
    they are held and shown only if the import fails. A user who set ``TF_CPP_MIN_LOG_LEVEL``
    below 3 still sees them.

    On JAX and torch, Keras imports TensorFlow only because it is installed: to seed it
    (``keras.utils.set_random_seed``) and to recognize its objects when saving a model. Neither
    concerns arrays-in, arrays-out MLPs, and the import costs 4-6 s and 460 MB in every job and
    worker (measured; ``benchmarks/RESULTS.md``). Keras is told TensorFlow is absent, so it stays
    unloaded; code that names ``tensorflow`` itself still imports it.
    """
    chosen = current() or os.environ.get("KERAS_BACKEND", "tensorflow")
    if chosen != "tensorflow":
        _keras_without_tensorflow()
        return
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        return
    with _native_stderr_held():
        import tensorflow  # noqa: F401


def _keras_without_tensorflow() -> None:
    """Mark Keras's lazy ``tensorflow`` module as not installed (unless TensorFlow is loaded)."""
    if "tensorflow" in sys.modules:
        return
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False  # what Keras records when the import fails


def configure() -> dict[str, str]:
    """Prepare the chosen backend for training and describe it and the devices it sees.

    On JAX, XLA's persistent compilation cache is turned on: a model whose shapes a trial (or an
    earlier job) already compiled reuses the program instead of compiling it again (about 1.5 s
    saved per trial on the quickstart, measured).

    Returns:
        ``{"backend", "backend_version", "devices"}`` for the parent run's tags.
    """
    prepare_environment()
    import_tensorflow_quietly()
    import keras

    backend = keras.backend.backend()
    devices = "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # the runtime already started; growth is then fixed
                pass
        if gpus:
            devices = ",".join(g.name for g in gpus)
    elif backend == "jax":
        import jax

        folder = cache_dir() / "jax"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(folder))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            jax.config.update("jax_compilation_cache_max_size", 512 * 2**20)
        except OSError:  # a read-only home: compile every model, as without the cache
            pass
        devices = ",".join(f"{d.platform}:{d.id}" for d in jax.devices())
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            devices = ",".join(
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            )
    return {
        "backend": backend,
        "backend_version": _package_version(backend),
        "devices": devices,
    }


def release() -> None:
    """Free what the previous trial left behind, before the next model is built.

    Called after ``keras.backend.clear_session()``. On JAX, ``jax.clear_caches()`` drops the
    compiled programs of models that are gone (each new shape added ~10 MB per trial otherwise,
    measured; programs a later trial needs come back from the persistent cache). Then glibc is
    asked to return freed heap pages to the system (``malloc_trim``), where it is the C library:
    without it freed memory stays resident and RSS creeps. On TensorFlow, the gradients that
    ``tf.custom_gradient`` registered while the previous models were traced are dropped
    (:func:`_drop_custom_gradients`): they were TensorFlow's leak of ~4-6 MB a model.
    """
    backend = current()
    if backend == "jax":
        import jax

        jax.clear_caches()
    elif backend == "tensorflow":
        _drop_custom_gradients()
    _malloc_trim()


def _drop_custom_gradients() -> int:
    """Forget the gradient functions ``tf.custom_gradient`` registered for finished models.

    Every graph-mode call of a ``tf.custom_gradient`` function (Keras' TensorFlow backend makes
    some in each model's train step) registers a new ``CustomGradient-<n>`` entry in
    TensorFlow's global gradient registry, and nothing ever removes it; each entry's closure
    holds the traced graph of its model. That kept every model of a study alive: 4.1 MB a
    model, measured over 50 small models after ``clear_session`` (0.02 MB with this). Called
    between trials only, when no traced function of the old models will be differentiated
    again. The registry is private TensorFlow state, so any change to it is skipped.

    Returns:
        How many entries were dropped.
    """
    try:
        from tensorflow.python.framework import ops  # the registry has no public API

        registry = ops._gradient_registry._registry
        stale = [name for name in registry if str(name).startswith("CustomGradient-")]
        for name in stale:
            del registry[name]
        return len(stale)
    except (ImportError, AttributeError, TypeError):  # another TensorFlow: leave it alone
        return 0


def _malloc_trim() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
        pass


def pip_requirements() -> list[str]:
    """What a model trained here needs to load: keras, numpy, pandas and the live backend."""
    import keras

    backend = keras.backend.backend()
    return [
        f"keras=={_package_version('keras')}",
        f"numpy=={_package_version('numpy')}",
        f"pandas=={_package_version('pandas')}",
        f"{backend}=={_package_version(backend)}",
    ]
