"""Where training runs: the one module that knows about backends and devices.

Owns the process-wide settings that must be made before a backend starts: quiet TensorFlow logs,
GPU memory growth on TensorFlow (so several trials or workers can share a GPU), no 75 %
preallocation on JAX, and a short description of the devices for the parent run's tags. This is
the only module allowed TensorFlow- or JAX-specific calls; model and training code use ``keras``.
"""

from __future__ import annotations

import os

__all__ = ["configure", "prepare_environment"]


def prepare_environment() -> None:
    """Set environment variables that must exist before TensorFlow or JAX is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide C++ log lines (errors raise)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: allocate as needed


def configure() -> dict[str, str]:
    """Prepare the backend for training and describe the devices it sees.

    Returns:
        ``{"backend": ..., "devices": ...}`` for the parent run's tags.
    """
    prepare_environment()
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

        devices = ",".join(str(d) for d in jax.devices())
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            devices = ",".join(
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            )
    return {"backend": backend, "devices": devices}
