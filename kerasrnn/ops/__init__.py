"""Time-loop operations: the one scan every kerasrnn layer runs through."""

from kerasrnn.ops.unroll import unroll

__all__ = ["unroll"]
