"""Attention over an encoder memory: Bahdanau (additive) and Luong (multiplicative).

Both split their work like the cells: `prepare(memory, mask)` computes, once per source
sentence, what does not depend on the decoder state (the projected keys), and
`attend(query, prepared)` is the per-step part, pure `keras.ops`, usable inside a time
loop. `prepare` returns only `(batch, ...)` tensors (memory, mask, keys), so a beam
search can repeat them per hypothesis.
"""

import keras
from keras import ops

from kerasrnn.layers import _checks
from kerasrnn.layers.cell import read
from kerasrnn.ops.device import BuildsOutsideInferenceMode

__all__ = ["BahdanauAttention", "LuongAttention", "masked_softmax"]

_register = keras.saving.register_keras_serializable(package="kerasrnn")


def masked_softmax(scores, mask=None):
    """Softmax over the last axis (source positions) that is exactly 0 where `mask` is False.

    Args:
        scores: `(batch, source)` or `(batch, target, source)`.
        mask: boolean `(batch, source)`, True at real tokens; `None` for no mask.

    Returns:
        Weights of the shape of `scores`, summing to 1 over the unmasked positions (a
        row without any unmasked position is all zeros).

    Example:

    >>> import numpy as np, keras
    >>> w = masked_softmax(np.zeros((1, 4), "float32"), np.array([[True, True, False, False]]))
    >>> keras.ops.convert_to_numpy(w).tolist()
    [[0.5, 0.5, 0.0, 0.0]]
    """
    dtype = scores.dtype
    scores = ops.cast(scores, "float32")
    if mask is None:
        return ops.cast(ops.softmax(scores, axis=-1), dtype)
    mask = ops.cast(mask, "bool")
    if len(scores.shape) == 3:
        mask = ops.expand_dims(mask, 1)
    scores = ops.where(mask, scores, -1e9)
    weights = ops.where(mask, ops.softmax(scores, axis=-1), 0.0)
    return ops.cast(weights, dtype)


def _context(weights, memory):
    """`Σ_j α_j h_j` for weights `(batch, [target,] source)` and memory `(batch, source, dim)`."""
    if len(weights.shape) == 2:
        return ops.squeeze(ops.matmul(ops.expand_dims(weights, 1), memory), 1)
    return ops.matmul(weights, memory)


@_register
class BahdanauAttention(BuildsOutsideInferenceMode, keras.layers.Layer):
    r"""Additive attention (Bahdanau, Cho & Bengio 2015).

    For decoder state `s_{t-1}` (the query) and encoder outputs `h_j` (the memory):

    ```
    e_{tj} = vᵀ tanh(W s_{t-1} + U h_j + b)
    α_{tj} = exp(e_{tj}) / Σ_{k unmasked} exp(e_{tk})      (0 at padded j)
    c_t    = Σ_j α_{tj} h_j
    ```

    `U h_j + b` is computed once per sentence in `prepare`.

    Args:
        units: size of the hidden layer of the score (`W`, `U` have `units` columns).

    Example:

    >>> import numpy as np, keras
    >>> att = BahdanauAttention(8)
    >>> memory = np.random.rand(2, 5, 6).astype("float32")
    >>> mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    >>> context, weights = att.attend(np.ones((2, 4), "float32"), att.prepare(memory, mask, query_dim=4))
    >>> tuple(context.shape), keras.ops.convert_to_numpy(weights)[0, 3:].tolist()
    ((2, 6), [0.0, 0.0])

    Reference:
        Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to Align
        and Translate", ICLR 2015.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = _checks.positive_int("units", units)

    def build(self, query_dim, memory_dim):
        self.query_kernel = self.add_weight(shape=(query_dim, self.units), name="query_kernel")
        self.memory_kernel = self.add_weight(shape=(memory_dim, self.units), name="memory_kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.score_vector = self.add_weight(shape=(self.units, 1), name="score_vector")
        self.built = True

    def prepare(self, memory, mask=None, query_dim=None):
        """Per-sentence tensors: `keys = U h + b`, the memory and its mask.

        `prepare` and `attend` are called from inside the decoder's loop, not through
        `Layer.__call__`: they read the weights in the layer's compute dtype themselves
        (float16 under `mixed_float16`)."""
        memory = ops.convert_to_tensor(memory)
        if not self.built:
            self.build(query_dim, memory.shape[-1])
        keys = ops.matmul(memory, read(self.memory_kernel, self.compute_dtype)) + read(self.bias, self.compute_dtype)
        return {"memory": memory, "mask": None if mask is None else ops.convert_to_tensor(mask), "keys": keys}

    def attend(self, query, prepared):
        """`(context (batch, memory_dim), weights (batch, source))` for `query (batch, query_dim)`."""
        projected = ops.expand_dims(ops.matmul(query, read(self.query_kernel, self.compute_dtype)), 1)
        hidden = ops.tanh(prepared["keys"] + projected)
        # An einsum, not `matmul(rank 3, rank 2)`: on TensorFlow that is a Tensordot whose
        # gradient inside the decoder's while loop XLA cannot compile (a dynamic transpose).
        v = ops.squeeze(read(self.score_vector, self.compute_dtype), -1)
        scores = ops.einsum("bsu,u->bs", hidden, v)
        weights = masked_softmax(scores, prepared["mask"])
        return _context(weights, prepared["memory"]), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@_register
class LuongAttention(BuildsOutsideInferenceMode, keras.layers.Layer):
    r"""Multiplicative ("global") attention (Luong, Pham & Manning 2015).

    For decoder output `s_t` (the query) and encoder outputs `h_j`:

    ```
    score(s_t, h_j) = s_tᵀ W_a h_j      ("general")
                    = s_tᵀ h_j          ("dot"; needs equal sizes)
    α_{tj} = exp(score_{tj}) / Σ_{k unmasked} exp(score_{tk})   (0 at padded j)
    c_t    = Σ_j α_{tj} h_j
    ```

    The query may be one step `(batch, dim)` or every step `(batch, target, dim)` at
    once: attention after the decoder RNN needs no loop.

    Args:
        score: `"general"` (default) or `"dot"`.

    Example:

    >>> import numpy as np, keras
    >>> att = LuongAttention("dot")
    >>> memory = np.random.rand(2, 5, 4).astype("float32")
    >>> mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    >>> context, weights = att.attend(np.ones((2, 3, 4), "float32"), att.prepare(memory, mask, query_dim=4))
    >>> tuple(context.shape), np.round(keras.ops.convert_to_numpy(weights).sum(-1), 5).tolist()
    ((2, 3, 4), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])

    Reference:
        Luong, Pham & Manning, "Effective Approaches to Attention-based Neural Machine
        Translation", EMNLP 2015.
    """

    def __init__(self, score="general", **kwargs):
        super().__init__(**kwargs)
        self.score = _checks.choice("score", score, ("general", "dot"))

    def build(self, query_dim, memory_dim):
        if self.score == "general":
            self.kernel = self.add_weight(shape=(memory_dim, query_dim), name="kernel")
        elif query_dim != memory_dim:
            raise ValueError(
                f"LuongAttention(score='dot') needs the decoder size ({query_dim}) to equal "
                f"the memory size ({memory_dim}); use score='general' or change the units."
            )
        self.built = True

    def prepare(self, memory, mask=None, query_dim=None):
        """Per-sentence constants: `keys = h W_aᵀ` (or `h`), the memory and its mask."""
        memory = ops.convert_to_tensor(memory)
        if not self.built:
            self.build(query_dim if query_dim is not None else memory.shape[-1], memory.shape[-1])
        keys = memory if self.score == "dot" else ops.matmul(memory, read(self.kernel, self.compute_dtype))
        return {"memory": memory, "mask": None if mask is None else ops.convert_to_tensor(mask), "keys": keys}

    def attend(self, query, prepared):
        """`(context, weights)` for `query (batch, [target,] query_dim)`."""
        keys_t = ops.transpose(prepared["keys"], (0, 2, 1))
        if len(query.shape) == 2:
            scores = ops.squeeze(ops.matmul(ops.expand_dims(query, 1), keys_t), 1)
        else:
            scores = ops.matmul(query, keys_t)
        weights = masked_softmax(scores, prepared["mask"])
        return _context(weights, prepared["memory"]), weights

    def get_config(self):
        return {**super().get_config(), "score": self.score}
