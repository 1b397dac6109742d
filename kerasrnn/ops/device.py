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
        import jax

        devices = getattr(x, "devices", None)
        try:
            platforms = {d.platform for d in devices()} if callable(devices) else None
        except Exception:  # noqa: BLE001 (a tracer has no concrete placement)
            platforms = None
        if not platforms:
            platforms = {jax.devices()[0].platform}
        return platforms != {"cpu"}
    if backend == "tensorflow":
        import tensorflow as tf

        device = getattr(x, "device", "") or ""
        if device:
            return "CPU" not in device.upper().rsplit("/", 1)[-1]
        return bool(tf.config.list_logical_devices("GPU"))
    return False
