"""Keras, imported once for the package, with an error that says what to do when the
backend Keras is set to is not installed.

Keras chooses its backend when it is first imported: `KERAS_BACKEND`, else
`~/.keras/keras.json`, else TensorFlow. A user who installed `kerasrnn[jax]` or
`kerasrnn[torch]` and imported kerasrnn without choosing one got Keras's own
`ModuleNotFoundError: No module named 'tensorflow'`, raised deep inside Keras.
"""

import importlib.util
import os

#: The backends' top-level modules, and the backend each belongs to.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax", "torch": "torch"}


def import_keras():
    """`import keras`; an `ImportError` naming `KERAS_BACKEND` and the installed
    backends when the one Keras chose is not installed."""
    try:
        import keras
    except ModuleNotFoundError as error:
        top = (error.name or "").partition(".")[0]
        missing = BACKEND_MODULES.get(top)
        if missing is None or importlib.util.find_spec(top) is not None:
            raise  # not a backend, or a backend installed but broken: Keras's own error
        raise ImportError(missing_backend_message(missing, os.environ.get("KERAS_BACKEND"))) from error
    return keras


def missing_backend_message(backend, chosen):
    """What to tell a user whose Keras backend `backend` is not installed; `chosen` is
    `KERAS_BACKEND` (None when unset)."""
    installed = [b for b in ("jax", "torch", "tensorflow") if b != backend and importlib.util.find_spec(b)]
    source = ("from KERAS_BACKEND" if chosen
              else "KERAS_BACKEND is not set: Keras's default, or ~/.keras/keras.json's")
    fix = (f"Set KERAS_BACKEND to an installed backend ({', '.join(map(repr, installed))}) before "
           f"importing keras or kerasrnn, e.g. `os.environ['KERAS_BACKEND'] = {installed[0]!r}`, or "
           if installed else "Install a backend: ")
    return (f"kerasrnn could not import Keras: its backend, {backend!r} ({source}), is not installed. "
            f"{fix}install {backend} (`pip install 'kerasrnn[{backend}]'`).")
