"""Where a tensor lives, as far as the time loop's choices care: CPU or accelerator; and
where the tensors that outlive a call are made (outside `torch.inference_mode()`)."""

import contextlib
import functools

import keras


def on_accelerator(x):
    """True if `x` (a backend tensor) lives on a GPU/TPU, False on the CPU.

    Symbolic tensors (while tracing) are placed on the backend's default device.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        device = getattr(x, "device", None)
        return device is not None and device.type not in ("cpu", "meta")
    if backend == "jax":
        return jax_platforms(x) != {"cpu"}
    if backend == "tensorflow":
        import tensorflow as tf

        device = getattr(x, "device", "") or ""
        if device:
            return "CPU" not in device.upper().rsplit("/", 1)[-1]
        return bool(tf.config.list_logical_devices("GPU"))
    return False


def jax_platforms(x):
    """The platforms (`"cpu"`, `"gpu"`, `"tpu"`) a JAX array lives on; for a tracer, which
    has no placement yet, the one the computation is placed on: `jax.default_device`
    (which `keras.device` sets) if set, else the first device."""
    import jax

    devices = getattr(x, "devices", None)
    try:
        platforms = {d.platform for d in devices()} if callable(devices) else None
    except Exception:  # noqa: BLE001 (a tracer has no concrete placement)
        platforms = None
    if platforms:
        return platforms
    default = jax.config.jax_default_device or jax.devices()[0]
    return {default if isinstance(default, str) else default.platform}


def torch_exporting():
    """Whether `torch.export` or `torch.jit.trace` is tracing the call (False on the
    other backends). Tensor values are then unknown or frozen into the program, and
    what the call makes lives only in the program (a cached buffer would be a constant
    of it; `torch.jit.trace` of the fused GRU's mirror failed)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def outside_inference_mode():
    """A context in which torch makes normal tensors, even inside `torch.inference_mode()`
    (a no-op on the other backends, and outside that mode).

    For the tensors that outlive the call that makes them: a layer's variables, the
    fused kernel's flat buffer. Made as inference tensors, they could never take part in
    a training step afterwards ("Inference tensors cannot be saved for backward"), as
    with a model first run by `with torch.inference_mode(): model(x)` (an evaluation
    before training, common in PyTorch code) and then trained.
    """
    if keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


class BuildsOutsideInferenceMode:
    """Mixin: every `build` of the class and of its subclasses (a user's cell too) runs
    `outside_inference_mode()`, so that a layer built by its first call under
    `torch.inference_mode()` gets variables that can train. (Keras makes them inference
    tensors there: `keras.layers.LSTM` then fails its first training step.)"""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        build = cls.__dict__.get("build")
        if build is not None and not getattr(build, "_kerasrnn_outside_inference_mode", False):
            cls.build = _built_outside_inference_mode(build)


def _built_outside_inference_mode(build):
    @functools.wraps(build)
    def wrapper(self, *args, **kwargs):
        with outside_inference_mode():
            return build(self, *args, **kwargs)

    wrapper._kerasrnn_outside_inference_mode = True
    return wrapper
