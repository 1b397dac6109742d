"""Where a tensor lives, as far as the time loop's choices care: CPU or accelerator."""

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
