"""Testing helpers: NumPy reference cells (golden values)."""

from kerasrnn.testing import reference

__all__ = ["reference"]
