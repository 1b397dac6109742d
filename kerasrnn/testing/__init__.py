"""Testing helpers: NumPy reference cells (golden values) and the conformance kit that
checks any kerasrnn cell against its NumPy equations (`check_cell`)."""

from kerasrnn.testing import reference
from kerasrnn.testing.conformance import CHECKS, check_cell

__all__ = ["CHECKS", "check_cell", "reference"]
