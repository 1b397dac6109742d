"""Bad inputs, tried as a new user would: each gets a ValueError or TypeError whose
message names the argument (or the function and what is wrong), the same on every
backend; never a backend's own error, a silent result or a crash.

`BAD` is the table: an id, a function making the bad call, the exception type and a
regular expression its message must match. `DOCUMENTED` lists inputs that look bad
but have a documented meaning, with the values they must give.
"""

import keras
import numpy as np
import pytest
import torch
from conftest import FUSED_LSTM, to_numpy

import kerasrnn
from kerasrnn import datasets, interop, regularizers, seq2seq
from kerasrnn.datasets import timeseries, translation

x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
right_padded = np.array([[True] * 5, [True] * 3 + [False] * 2])


def built(layer, shape=x.shape):
    layer.build(shape)
    return layer


def called(layer, *args, **kwargs):
    layer(*args, **kwargs)
    return layer


def _vectorizer():
    return datasets.make_vectorizer(["a b c"], max_tokens=10)


def _seq2seq():
    return seq2seq.Seq2Seq(9, 9, embedding_dim=4, encoder_units=4, decoder_units=4)


def stateful_lstm():
    return called(kerasrnn.LSTM(4, stateful=True), x)


def torch_lstm(**kwargs):
    return torch.nn.LSTM(3, 4, batch_first=True, **kwargs)


def torch_with_replaced_weight():
    module = torch_lstm()
    module.weight_ih_l0 = torch.nn.Parameter(torch.zeros(16, 5))
    return module


def torch_with_changed_size():
    module = torch_lstm()
    module.hidden_size = 5
    return module


# (id, bad call, exception, message pattern)
BAD = [
    # --------------------------------------------------------- layer arguments
    ("units=0", lambda: kerasrnn.LSTM(0), ValueError, r"`units` must be a positive integer"),
    ("units=-3", lambda: kerasrnn.GRU(-3), ValueError, r"`units` must be a positive integer"),
    ("units=2.5", lambda: kerasrnn.SimpleRNN(2.5), TypeError, r"`units` must be a positive integer"),
    ("units='8'", lambda: kerasrnn.LSTM("8"), TypeError, r"`units` must be a positive integer"),
    ("units=True", lambda: kerasrnn.IRNN(True), TypeError, r"`units` must be a positive integer"),
    ("units=None", lambda: kerasrnn.LSTMCell(None), TypeError, r"`units` must be a positive integer"),
    ("activation='tanhh'", lambda: kerasrnn.LSTM(4, activation="tanhh"), ValueError,
     r"Unknown activation for `activation`: 'tanhh'"),
    ("activation=3", lambda: kerasrnn.SimpleRNN(4, activation=3), ValueError,
     r"Unknown activation for `activation`: 3"),
    ("recurrent_activation='sigmoidd'", lambda: kerasrnn.GRU(4, recurrent_activation="sigmoidd"),
     ValueError, r"Unknown activation for `recurrent_activation`"),
    ("kernel_initializer='nope'", lambda: kerasrnn.LSTM(4, kernel_initializer="nope"), ValueError,
     r"Unknown initializer for `kernel_initializer`: 'nope'"),
    ("recurrent_initializer=3", lambda: kerasrnn.GRU(4, recurrent_initializer=3), ValueError,
     r"Unknown initializer for `recurrent_initializer`: 3"),
    ("bias_initializer='onez'", lambda: kerasrnn.SimpleRNNCell(4, bias_initializer="onez"), ValueError,
     r"Unknown initializer for `bias_initializer`"),
    ("kernel_regularizer='l3'", lambda: kerasrnn.LSTM(4, kernel_regularizer="l3"), ValueError,
     r"Unknown regularizer for `kernel_regularizer`: 'l3'"),
    ("recurrent_regularizer=5", lambda: kerasrnn.GRU(4, recurrent_regularizer=5), ValueError,
     r"Unknown regularizer for `recurrent_regularizer`"),
    ("bias_regularizer='l1_l2'", lambda: kerasrnn.SimpleRNN(4, bias_regularizer="l1_l2"), ValueError,
     r"Unknown regularizer for `bias_regularizer`"),
    ("kernel_constraint='nope'", lambda: kerasrnn.LSTM(4, kernel_constraint="nope"), ValueError,
     r"Unknown constraint for `kernel_constraint`"),
    ("recurrent_constraint=1.5", lambda: kerasrnn.GRU(4, recurrent_constraint=1.5), ValueError,
     r"Unknown constraint for `recurrent_constraint`"),
    ("bias_constraint='x'", lambda: kerasrnn.LSTMCell(4, bias_constraint="x"), ValueError,
     r"Unknown constraint for `bias_constraint`"),
    ("dropout=-0.1", lambda: kerasrnn.LSTM(4, dropout=-0.1), ValueError, r"`dropout` must be in \[0, 1\)"),
    ("dropout=1.0", lambda: kerasrnn.GRU(4, dropout=1.0), ValueError, r"`dropout` must be in \[0, 1\)"),
    ("dropout='0.5'", lambda: kerasrnn.SimpleRNN(4, dropout="0.5"), TypeError, r"`dropout` must be a float"),
    ("dropout=None", lambda: kerasrnn.LSTM(4, dropout=None), TypeError, r"`dropout` must be a float"),
    ("dropout=nan", lambda: kerasrnn.GRU(4, dropout=float("nan")), ValueError, r"`dropout` must be in"),
    ("recurrent_dropout=1.5", lambda: kerasrnn.LSTM(4, recurrent_dropout=1.5), ValueError,
     r"`recurrent_dropout` must be in"),
    ("recurrent_dropout=-1", lambda: kerasrnn.GRUCell(4, recurrent_dropout=-1), ValueError,
     r"`recurrent_dropout` must be in"),
    ("seed='abc'", lambda: kerasrnn.LSTM(4, seed="abc"), ValueError, r"`seed` must be an integer"),
    ("seed=1.5", lambda: kerasrnn.GRU(4, seed=1.5), ValueError, r"`seed` must be an integer"),
    ("layer_norm_epsilon=0", lambda: kerasrnn.LSTM(4, layer_norm_epsilon=0), ValueError,
     r"`layer_norm_epsilon` must be a finite number > 0"),
    ("layer_norm_epsilon=-1e-3", lambda: kerasrnn.GRU(4, layer_norm_epsilon=-1e-3), ValueError,
     r"`layer_norm_epsilon` must be a finite number > 0"),
    # Infinity gave a constant 0 output (the normalized values all 0).
    ("layer_norm_epsilon=inf", lambda: kerasrnn.GRU(4, layer_norm=True, layer_norm_epsilon=float("inf")), ValueError,
     r"`layer_norm_epsilon` must be a finite number > 0"),
    ("IRNN(gain=inf)", lambda: kerasrnn.IRNN(4, gain=float("inf")), ValueError, r"`gain` must be a finite number > 0"),
    ("layer_norm_epsilon='x'", lambda: kerasrnn.SimpleRNN(4, layer_norm_epsilon="x"), TypeError,
     r"`layer_norm_epsilon` must be a positive float"),
    ("layer_norm_epsilon=nan", lambda: kerasrnn.LSTM(4, layer_norm_epsilon=float("nan")), ValueError,
     r"`layer_norm_epsilon` must be a finite number > 0"),
    ("zoneout=1.0", lambda: kerasrnn.LSTM(4, zoneout=1.0), ValueError, r"`zoneout` must be in \[0, 1\)"),
    ("zoneout=-0.1", lambda: kerasrnn.GRU(4, zoneout=-0.1), ValueError, r"`zoneout` must be in"),
    ("zoneout='a'", lambda: kerasrnn.SimpleRNN(4, zoneout="a"), TypeError, r"`zoneout` must be a float"),
    ("zoneout_cell=1.0", lambda: kerasrnn.LSTM(4, zoneout_cell=1.0), ValueError, r"`zoneout_cell` must be in"),
    ("proj_size=-1", lambda: kerasrnn.LSTM(8, proj_size=-1), ValueError, r"`proj_size` must be >= 0"),
    ("proj_size=2.5", lambda: kerasrnn.LSTM(8, proj_size=2.5), TypeError, r"`proj_size` must be a non-negative"),
    ("proj_size=units", lambda: kerasrnn.LSTM(8, proj_size=8), ValueError,
     r"`proj_size` must be smaller than `units`"),
    ("GRU(use_peepholes)", lambda: kerasrnn.GRU(4, use_peepholes=True), TypeError,
     r"GRU has no option `use_peepholes`: it is an option of LSTMCell"),
    ("LSTM(reset_after)", lambda: kerasrnn.LSTM(4, reset_after=False), TypeError,
     r"LSTM has no option `reset_after`: it is an option of GRUCell"),
    ("SimpleRNN(proj_size)", lambda: kerasrnn.SimpleRNN(4, proj_size=2), TypeError,
     r"SimpleRNN has no option `proj_size`"),
    ("GRU(zoneout_cell)", lambda: kerasrnn.GRU(4, zoneout_cell=0.1), TypeError,
     r"GRU has no option `zoneout_cell`"),
    ("fused='yes'", lambda: kerasrnn.LSTM(4, fused="yes"), ValueError, r"`fused` must be one of"),
    ("fused=1", lambda: kerasrnn.GRU(4, fused=1), ValueError, r"`fused` must be one of .*received 1"),
    ("fused=None", lambda: kerasrnn.SimpleRNN(4, fused=None), ValueError, r"`fused` must be one of"),
    ("hoist_inputs='always'", lambda: kerasrnn.LSTM(4, hoist_inputs="always"), ValueError,
     r"`hoist_inputs` must be one of"),
    ("remat=0", lambda: kerasrnn.GRU(4, remat=0), ValueError, r"`remat` must be one of"),
    ("xla='no'", lambda: kerasrnn.LSTM(4, xla="no"), ValueError, r"`xla` must be one of"),
    ("use_cudnn='yes'", lambda: kerasrnn.LSTM(4, use_cudnn="yes"), ValueError, r"`use_cudnn` must be one of"),
    ("use_cudnn=1", lambda: kerasrnn.GRU(4, use_cudnn=1), ValueError, r"`use_cudnn` must be one of"),
    ("use_cudnn=True, fused=False", lambda: kerasrnn.LSTM(4, use_cudnn=True, fused=False), ValueError,
     r"`use_cudnn=True`.*contradicts `fused=False`"),
    ("implementation=3", lambda: kerasrnn.LSTM(4, implementation=3), ValueError,
     r"`implementation` must be 1 or 2"),
    ("implementation='2'", lambda: kerasrnn.GRU(4, implementation="2"), TypeError,
     r"`implementation` must be 1 or 2"),
    ("implementation=True", lambda: kerasrnn.LSTMCell(4, implementation=True), TypeError,
     r"`implementation` must be 1 or 2"),
    ("SimpleRNN(implementation)", lambda: kerasrnn.SimpleRNN(4, implementation=1), TypeError,
     r"SimpleRNN has no option `implementation`"),
    ("RNN(implementation)", lambda: kerasrnn.RNN(kerasrnn.GRUCell(4), implementation=1), TypeError,
     r"RNN has no option `implementation`"),
    ("time_major=True", lambda: kerasrnn.LSTM(4, time_major=True), TypeError,
     r"LSTM has no option `time_major`.*swapaxes"),
    ("SimpleRNN(time_major)", lambda: kerasrnn.SimpleRNN(4, time_major=False), TypeError,
     r"no option `time_major`"),
    ("unknown keyword", lambda: kerasrnn.LSTM(4, foo=1), ValueError, r"Unrecognized keyword.*'foo'"),
    ("RNN(keras cell)", lambda: kerasrnn.RNN(keras.layers.LSTMCell(4)), TypeError,
     r"`cell` must be a kerasrnn cell"),
    ("RNN(Dense)", lambda: kerasrnn.RNN(keras.layers.Dense(4)), TypeError, r"`cell` must be a kerasrnn cell"),
    ("RNN('lstm')", lambda: kerasrnn.RNN("lstm"), TypeError, r"`cell` must be a kerasrnn cell"),
    ("IRNN(gain='x')", lambda: kerasrnn.IRNN(4, gain="x"), TypeError, r"`gain` must be a positive float"),
    ("IRNN(gain=0)", lambda: kerasrnn.IRNN(4, gain=0.0), ValueError, r"`gain` must be a finite number > 0"),
    ("IRNN(input_stddev=-1)", lambda: kerasrnn.IRNN(4, input_stddev=-1.0), ValueError,
     r"`input_stddev` must be a finite number > 0"),
    ("stateful, no batch size", lambda: built(kerasrnn.LSTM(4, stateful=True), (None, 5, 3)), ValueError,
     r"`stateful=True` needs a fixed batch size"),
    # ------------------------------------------------------------- call arguments
    ("rank 2 input", lambda: kerasrnn.LSTM(4)(np.ones((2, 3), "float32")), ValueError,
     r"expected inputs of rank 3 \(batch, time, features\); received shape \(2, 3\)"),
    ("rank 4 input", lambda: kerasrnn.GRU(4)(np.ones((2, 5, 3, 1), "float32")), ValueError,
     r"expected inputs of rank 3"),
    ("T=0", lambda: kerasrnn.LSTM(4)(np.zeros((3, 0, 4), "float32")), ValueError,
     r"the sequences have no time steps \(shape \(3, 0, 4\)\)"),
    ("T=0, loop", lambda: kerasrnn.GRU(4, fused=False)(np.zeros((3, 0, 4), "float32")), ValueError,
     r"no time steps"),
    ("T=0, masked", lambda: kerasrnn.SimpleRNN(4)(np.zeros((3, 0, 4), "float32"), mask=np.zeros((3, 0), bool)),
     ValueError, r"no time steps"),
    ("T=0, return_sequences", lambda: kerasrnn.LSTM(4, return_sequences=True)(np.zeros((1, 0, 2), "float32")),
     ValueError, r"no time steps"),
    ("string sequences", lambda: kerasrnn.GRU(4)(np.full((2, 5, 3), "a")), TypeError,
     r"`sequences` must be a numeric tensor.*received dtype string"),
    ("bytes sequences", lambda: kerasrnn.LSTM(4)(np.full((2, 5, 3), b"a")), TypeError,
     r"`sequences` must be a numeric tensor.*bytes"),
    ("object sequences", lambda: kerasrnn.LSTM(4)(np.full((2, 5, 3), None, dtype=object)), TypeError,
     r"`sequences` must be a numeric tensor.*object"),
    ("complex sequences", lambda: kerasrnn.SimpleRNN(4)(np.ones((2, 5, 3), "complex64")), TypeError,
     r"`sequences` must be a numeric tensor.*complex64"),
    ("feature size changed", lambda: called(kerasrnn.LSTM(4), x)(np.ones((2, 5, 7), "float32")), ValueError,
     r"feature size changed.*expected 3, received 7"),
    ("one state for an LSTM", lambda: kerasrnn.LSTM(4)(x, initial_state=[np.zeros((2, 4), "float32")]),
     ValueError, r"`initial_state` must be a list of 2 tensor"),
    ("two states for a GRU", lambda: kerasrnn.GRU(4)(x, initial_state=[np.zeros((2, 4), "float32")] * 2),
     ValueError, r"`initial_state` must be a list of 1 tensor"),
    ("state of other units", lambda: kerasrnn.GRU(4)(x, initial_state=[np.zeros((2, 5), "float32")]),
     ValueError, r"`initial_state\[0\]` must have shape \(batch=2, 4\); received \(2, 5\)"),
    ("state of other batch", lambda: kerasrnn.LSTM(4)(x, initial_state=[np.zeros((3, 4), "float32")] * 2),
     ValueError, r"`initial_state\[0\]` must have shape \(batch=2, 4\); received \(3, 4\)"),
    ("state of rank 3", lambda: kerasrnn.SimpleRNN(4)(x, initial_state=[np.zeros((2, 4, 1), "float32")]),
     ValueError, r"`initial_state\[0\]` must have shape"),
    ("state of rank 1", lambda: kerasrnn.GRU(4)(x, initial_state=np.zeros((4,), "float32")),
     ValueError, r"`initial_state\[0\]` must have shape"),
    ("string state", lambda: kerasrnn.GRU(4)(x, initial_state=[np.full((2, 4), "a")]), TypeError,
     r"`initial_state` must be a numeric tensor.*string"),
    ("mask of other time", lambda: kerasrnn.GRU(4)(x, mask=np.ones((2, 6), bool)), ValueError,
     r"`mask` must have shape \(batch, time\) = \(2, 5\); received \(2, 6\)"),
    ("mask of other batch", lambda: kerasrnn.LSTM(4)(x, mask=np.ones((3, 5), bool)), ValueError,
     r"`mask` must have shape \(batch, time\)"),
    ("mask of rank 3", lambda: kerasrnn.SimpleRNN(4)(x, mask=np.ones((2, 5, 1), bool)), ValueError,
     r"`mask` must have shape \(batch, time\)"),
    ("mask of rank 1", lambda: kerasrnn.GRU(4)(x, mask=np.ones((2,), bool)), ValueError,
     r"`mask` must have shape \(batch, time\)"),
    ("string mask", lambda: kerasrnn.GRU(4)(x, mask=np.full((2, 5), "a")), TypeError,
     r"`mask` must be a numeric tensor.*received dtype string"),
    ("string mask, fused", lambda: kerasrnn.LSTM(4)(x, mask=np.full((2, 5), "True")), TypeError,
     r"`mask` must be a numeric tensor"),
    ("complex mask", lambda: kerasrnn.SimpleRNN(4)(x, mask=np.ones((2, 5), "complex64")), TypeError,
     r"`mask` must be a numeric tensor.*complex64"),
    ("stateful, other batch", lambda: stateful_lstm()(np.ones((3, 5, 3), "float32")), ValueError,
     r"stateful=True keeps states for batches of 2; received a batch of 3"),
    # With an initial state of the new batch size the loop ran, then the states' assign failed.
    ("stateful, other batch with initial_state",
     lambda: stateful_lstm()(np.ones((3, 5, 3), "float32"), initial_state=[np.zeros((3, 4), "float32")] * 2),
     ValueError, r"stateful=True keeps states for batches of 2; received a batch of 3"),
    ("stateful GRU, other batch",
     lambda: called(kerasrnn.GRU(4, stateful=True), x)(np.ones((1, 5, 3), "float32")), ValueError,
     r"stateful=True keeps states for batches of 2"),
    ("use_cudnn=True, no kernel", lambda: kerasrnn.GRU(4, use_cudnn=True, reset_after=False)(x), ValueError,
     r"fused=True, but no fused kernel computes this configuration"),
    # ------------------------------------------------------------------- DeepRNN
    ("DeepRNN([])", lambda: kerasrnn.DeepRNN([]), ValueError, r"`layers` must be a non-empty list"),
    ("DeepRNN(layer)", lambda: kerasrnn.DeepRNN(kerasrnn.LSTM(4)), ValueError,
     r"`layers` must be a non-empty list"),
    ("DeepRNN([Dense])", lambda: kerasrnn.DeepRNN([keras.layers.Dense(4)]), TypeError,
     r"layers\[0\] must be a recurrent layer"),
    ("DeepRNN([Bidirectional])",
     lambda: kerasrnn.DeepRNN([keras.layers.Bidirectional(kerasrnn.LSTM(4))]), TypeError,
     r"layers\[0\] is a keras.layers.Bidirectional: .*bidirectional=True"),
    ("DeepRNN([layer, layer])", lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4)] * 2), ValueError,
     r"`layers\[0\]` and `layers\[1\]` are the same layer object"),
    ("DeepRNN([cell, cell])", lambda: kerasrnn.DeepRNN([kerasrnn.GRUCell(4)] * 2), ValueError,
     r"`layers\[0\]` and `layers\[1\]` are the same cell object"),
    ("DeepRNN(bidirectional=[True])",
     lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.LSTM(4)], bidirectional=[True]), ValueError,
     r"`bidirectional` has 1 entries for 2 layers"),
    ("DeepRNN(merge_mode='max')", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)], merge_mode="max"), ValueError,
     r"`merge_mode` must be one of"),
    ("DeepRNN(dropout=1.5)", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)], dropout=1.5), ValueError,
     r"`dropout` must be in"),
    ("DeepRNN(output_dropout=-0.1)", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)], output_dropout=-0.1),
     ValueError, r"`output_dropout` must be in"),
    ("DeepRNN(fused='x')", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)], fused="x"), ValueError,
     r"`fused` must be one of"),
    ("DeepRNN residual, size changes",
     lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4), kerasrnn.GRU(6)], residual=True)(x), ValueError,
     r"residual=True needs layer 1 to keep the feature size"),
    ("DeepRNN residual, bidirectional top",
     lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4), kerasrnn.GRU(4)], residual=True, bidirectional=True),
     ValueError, r"residual=True with return_sequences=False is ambiguous"),
    ("DeepRNN state count",
     lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.LSTM(4)])(x, initial_state=[np.zeros((2, 4))] * 2),
     ValueError, r"`initial_state` must be the flat list of every layer's states \(4 tensors"),
    ("DeepRNN state of other batch",
     lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4), kerasrnn.LSTM(4)])(
         x, initial_state=[np.zeros((3, 4), "float32")] * 4),
     ValueError, r"`initial_state\[0\]` must have shape \(batch=2, 4\); received \(3, 4\)"),
    ("DeepRNN string state",
     lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)])(x, initial_state=[np.full((2, 4), "a")]), TypeError,
     r"`initial_state` must be a numeric tensor"),
    ("DeepRNN rank 2", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)])(np.ones((2, 3), "float32")), ValueError,
     r"expected inputs of rank 3"),
    ("DeepRNN T=0", lambda: kerasrnn.DeepRNN([kerasrnn.LSTM(4)] + [kerasrnn.LSTM(4)])(
        np.zeros((2, 0, 3), "float32")), ValueError, r"no time steps"),
    ("DeepRNN string mask", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)])(x, mask=np.full((2, 5), "a")),
     TypeError, r"`mask` must be a numeric tensor"),
    ("DeepRNN mask shape", lambda: kerasrnn.DeepRNN([kerasrnn.GRU(4)])(x, mask=np.ones((2, 4), bool)),
     ValueError, r"`mask` must have shape \(batch, time\)"),
    ("DeepRNN.repeat(num_layers=0)", lambda: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(4), 0), ValueError,
     r"`num_layers` must be a positive integer"),
    ("DeepRNN.repeat(num_layers='2')", lambda: kerasrnn.DeepRNN.repeat(kerasrnn.GRU(4), "2"), TypeError,
     r"`num_layers` must be a positive integer"),
    # ------------------------------------------------------------------- interop
    ("from_torch(Linear)", lambda: interop.from_torch(torch.nn.Linear(3, 4)), TypeError,
     r"from_torch: expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU; received Linear"),
    ("from_torch(use_bias=False)", lambda: interop.from_torch(torch_lstm(), use_bias=False), ValueError,
     r"from_torch: `use_bias` is read from the module \(use_bias=True\)"),
    ("from_torch(units=8)", lambda: interop.from_torch(torch_lstm(), units=8), ValueError,
     r"from_torch: `units` is read from the module \(units=4\)"),
    ("from_torch(proj_size=2)", lambda: interop.from_torch(torch_lstm(), proj_size=2), ValueError,
     r"from_torch: `proj_size` is read from the module"),
    ("from_torch(reset_after=False)",
     lambda: interop.from_torch(torch.nn.GRU(3, 4), reset_after=False), ValueError,
     r"from_torch: `reset_after` is read from the module"),
    ("from_torch(activation='relu')", lambda: interop.from_torch(torch.nn.RNN(3, 4), activation="relu"),
     ValueError, r"from_torch: `activation` is read from the module \(activation='tanh'\)"),
    ("from_torch, replaced weight", lambda: interop.from_torch(torch_with_replaced_weight()), ValueError,
     r"from_torch: `weight_ih_l0` has shape \(16, 5\), but .*need \(16, 3\)"),
    ("from_torch, changed hidden_size", lambda: interop.from_torch(torch_with_changed_size()), ValueError,
     r"from_torch: `weight_ih_l0` has shape \(16, 3\), but .*hidden_size=5.*need \(20, 3\)"),
    ("to_torch(unbuilt)", lambda: interop.to_torch(kerasrnn.LSTM(4)), ValueError,
     r"to_torch: lstm\w* is not built"),
    ("to_torch(unbuilt DeepRNN)", lambda: interop.to_torch(kerasrnn.DeepRNN([kerasrnn.GRU(4), kerasrnn.GRU(4)])),
     ValueError, r"to_torch: gru\w* is not built"),
    ("to_torch(layer_norm)", lambda: interop.to_torch(built(kerasrnn.LSTM(4, layer_norm=True))), ValueError,
     r"to_torch: torch.nn cannot compute layer 0: layer_norm=True"),
    ("to_torch(peepholes)", lambda: interop.to_torch(built(kerasrnn.LSTM(4, use_peepholes=True))), ValueError,
     r"to_torch: .*use_peepholes=True"),
    ("to_torch(zoneout)", lambda: interop.to_torch(built(kerasrnn.GRU(4, zoneout=0.1))), ValueError,
     r"to_torch: .*zoneout"),
    ("to_torch(reset_after=False)", lambda: interop.to_torch(built(kerasrnn.GRU(4, reset_after=False))),
     ValueError, r"to_torch: .*reset_after=False"),
    ("to_torch(LSTM relu)", lambda: interop.to_torch(built(kerasrnn.LSTM(4, activation="relu"))), ValueError,
     r"to_torch: .*activation is not tanh"),
    ("to_torch(residual)",
     lambda: interop.to_torch(kerasrnn.DeepRNN([kerasrnn.GRU(3), kerasrnn.GRU(3)], residual=True,
                                               return_sequences=True)),
     ValueError, r"to_torch: torch.nn has no residual connections"),
    ("to_torch(some bidirectional)",
     lambda: interop.to_torch(kerasrnn.DeepRNN([kerasrnn.GRU(3), kerasrnn.GRU(3)], bidirectional=[True, False])),
     ValueError, r"to_torch: torch.nn needs every layer bidirectional, or none"),
    ("to_torch(merge_mode='sum')",
     lambda: interop.to_torch(keras.layers.Bidirectional(kerasrnn.GRU(3), merge_mode="sum")), ValueError,
     r"to_torch: torch.nn concatenates the two directions; merge_mode='sum'"),
    ("to_torch(go_backwards)", lambda: interop.to_torch(built(kerasrnn.GRU(4, go_backwards=True))), ValueError,
     r"to_torch: layer 0 has go_backwards=True"),
    ("to_torch(keras LSTM)", lambda: interop.to_torch(built(keras.layers.LSTM(4))), TypeError,
     r"to_torch: layer 0 is LSTM, not a kerasrnn layer"),
    ("to_keras(unbuilt)", lambda: interop.to_keras(kerasrnn.GRU(4)), ValueError,
     r"to_keras: gru\w* is not built"),
    ("to_keras(layer_norm)", lambda: interop.to_keras(built(kerasrnn.LSTM(4, layer_norm=True))), ValueError,
     r"to_keras: keras.layers.LSTM has no `layer_norm`"),
    ("to_keras(proj_size)", lambda: interop.to_keras(built(kerasrnn.LSTM(4, proj_size=2))), ValueError,
     r"to_keras: keras.layers.LSTM has no `proj_size`"),
    ("to_keras(Dense)", lambda: interop.to_keras(keras.layers.Dense(3)), TypeError,
     r"to_keras: expected a kerasrnn SimpleRNN, LSTM, GRU"),
    ("from_keras(unbuilt)", lambda: interop.from_keras(keras.layers.LSTM(4)), ValueError,
     r"from_keras: lstm\w* is not built"),
    ("from_keras(Dense)", lambda: interop.from_keras(keras.layers.Dense(3)), TypeError,
     r"from_keras: expected keras.layers.SimpleRNN, LSTM, GRU or Bidirectional"),
    # Argument checks that ended in a backend or NumPy error (or a silent result).
    ("DeepRNN('lstm')", lambda: kerasrnn.layers.DeepRNN("lstm"), ValueError,
     r"`layers` must be a non-empty list of recurrent layers"),
    ("ForgetGateBias(gates=0)", lambda: kerasrnn.initializers.ForgetGateBias(gates=0), ValueError,
     r"`gates` must be a positive integer"),
    ("ForgetGateBias(forget_index=4)", lambda: kerasrnn.initializers.ForgetGateBias(forget_index=4), ValueError,
     r"`forget_index` must be an integer in \[0, gates=4\)"),
    ("sequence_dropout(rate=1)", lambda: regularizers.sequence_dropout(np.ones((1, 3, 2), "float32"), 1.0, seed=0),
     ValueError, r"`rate` must be in \[0, 1\)"),
    ("sequence_dropout(rate=-0.5)", lambda: regularizers.sequence_dropout(np.ones((1, 3, 2), "float32"), -0.5),
     ValueError, r"`rate` must be in \[0, 1\)"),
    ("dropout_mask(rate=1)", lambda: regularizers.dropout_mask((2, 3), 1.0, seed=0), ValueError,
     r"`rate` must be in \[0, 1\)"),
    ("dropout_mask(rate='0.5')", lambda: regularizers.dropout_mask((2, 3), "0.5"), TypeError,
     r"`rate` must be a float in \[0, 1\)"),
    ("zoneout_mask(rate=1.5)", lambda: regularizers.zoneout_mask((2, 3), 1.5, seed=0), ValueError,
     r"`rate` must be in \[0, 1\) \(the probability that a unit keeps"),
    ("zoneout_mask(rate=-1)", lambda: regularizers.zoneout_mask((2, 3), -1, seed=0), ValueError,
     r"`rate` must be in \[0, 1\)"),
    ("ForgetGateBias()(shape=())", lambda: kerasrnn.initializers.ForgetGateBias()(()), ValueError,
     r"the bias needs at least one axis"),
    ("encode_texts(max_length=0)", lambda: datasets.encode_texts(_vectorizer(), ["a b"], 0), ValueError,
     r"`max_length` must be a positive integer"),
    ("encode_texts(max_length=2.5)", lambda: datasets.encode_texts(_vectorizer(), ["a b"], 2.5), TypeError,
     r"`max_length` must be a positive integer"),
    ("TranslationBatches(batch_size=0)", lambda: datasets.TranslationBatches([[4, 3]], [[5, 3]], batch_size=0),
     ValueError, r"`batch_size` must be a positive integer"),
    ("TranslationBatches(batch_size=-1)", lambda: datasets.TranslationBatches([[4, 3]], [[5, 3]], batch_size=-1),
     ValueError, r"`batch_size` must be a positive integer"),
    ("TranslationBatches(multiple=0)", lambda: datasets.TranslationBatches([[4, 3]], [[5, 3]], multiple=0),
     ValueError, r"`multiple` must be a positive integer"),
    ("pad_batch(multiple=0)", lambda: translation.pad_batch([[4, 3]], multiple=0), ValueError,
     r"`multiple` must be a positive integer"),
    ("split_pairs(fractions>1)", lambda: translation.split_pairs(["a"] * 10, ["b"] * 10, (0.9, 0.5, 0.1)),
     ValueError, r"split_pairs: `fractions` must be three numbers >= 0 that sum to 1"),
    ("split_pairs(two fractions)", lambda: translation.split_pairs(["a"] * 10, ["b"] * 10, (0.9, 0.1)),
     ValueError, r"split_pairs: `fractions` must be three numbers"),
    ("split_pairs(unpaired)", lambda: translation.split_pairs(["a"] * 10, ["b"] * 9), ValueError,
     r"split_pairs: 10 source and 9 target sentences"),
    ("window_dataset(horizon=-1)", lambda: timeseries.window_dataset(np.arange(40.0), 5, "multi_step", horizon=-1),
     ValueError, r"`horizon` must be a positive integer"),
    ("window_dataset(horizon=0)", lambda: timeseries.window_dataset(np.arange(40.0), 5, "seq2seq", horizon=0),
     ValueError, r"`horizon` must be a positive integer"),
    ("window_dataset(n_steps=0)", lambda: timeseries.window_dataset(np.arange(40.0), 0, "one_step"),
     ValueError, r"`n_steps` must be a positive integer"),
    ("window_dataset(n_steps=2.5)", lambda: timeseries.window_dataset(np.arange(40.0), 2.5, "one_step"),
     TypeError, r"`n_steps` must be a positive integer"),
    ("window_dataset(n_steps=True)", lambda: timeseries.window_dataset(np.arange(40.0), True, "one_step"),
     TypeError, r"`n_steps` must be a positive integer"),
    ("task_targets(horizon=-2)", lambda: timeseries.task_targets(np.ones((2, 9, 1)), 3, "seq2seq", horizon=-2),
     ValueError, r"`horizon` must be a positive integer"),
    ("iterative_forecast(horizon=0)", lambda: timeseries.iterative_forecast(lambda w: w[:, -1], np.ones((2, 3, 1)), 0),
     ValueError, r"`horizon` must be a positive integer"),
    ("naive_forecast(horizon=0)", lambda: timeseries.naive_forecast(np.ones((2, 3, 1)), "multi_step", horizon=0),
     ValueError, r"`horizon` must be a positive integer"),
    ("split_bounds(-5)", lambda: timeseries.split_bounds(-5), ValueError, r"`length` must be a positive integer"),
    ("geron_dataset(sizes=(3, 2))", lambda: timeseries.geron_dataset("one_step", sizes=(3, 2)), ValueError,
     r"`sizes` must be three integers >= 0"),
    ("DeepRNN(stateful, bidirectional)", lambda: kerasrnn.layers.DeepRNN([kerasrnn.GRU(4, stateful=True)],
                                                                          bidirectional=True),
     ValueError, r"DeepRNN: layers\[0\] is stateful and bidirectional"),
    ("translate(beam_size=None)", lambda: _seq2seq().translate(np.array([[4, 5, 3]]), beam_size=None), TypeError,
     r"`beam_size` must be a positive integer"),
    # JAX and TensorFlow failed indexing step 0 (IndexError, OutOfRangeError); torch said this.
    ("unroll(time=0)", lambda: kerasrnn.ops.unroll(lambda x, s: (s[0], s), np.zeros((2, 0, 3), "float32"),
                                                   [np.zeros((2, 4), "float32")]),
     ValueError, r"Cannot run a recurrent layer over a sequence of length 0"),
    # NaN passed `alpha < 0`: every score became NaN and beam search returned [2, 0, 0, ...].
    ("length_penalty(alpha=nan)", lambda: seq2seq.length_penalty(3, float("nan")), ValueError,
     r"`alpha` must be a finite number >= 0 \(the length penalty's exponent"),
    ("length_penalty(alpha=inf)", lambda: seq2seq.length_penalty(3, float("inf")), ValueError,
     r"`alpha` must be a finite number >= 0"),
    ("length_penalty(alpha=-1)", lambda: seq2seq.length_penalty(3, -1.0), ValueError,
     r"`alpha` must be a finite number >= 0"),
    ("length_penalty(alpha='0.6')", lambda: seq2seq.length_penalty(3, "0.6"), TypeError, r"`alpha` must be a number"),
    ("beam_search(alpha=nan)", lambda: seq2seq.beam_search(
        lambda t, s, c: (None, s, None), [], {}, batch_size=1, bos_id=0, eos_id=1, max_length=3, alpha=float("nan")),
     ValueError, r"`alpha` must be a finite number >= 0"),
    ("translate(alpha=nan)", lambda: _seq2seq().translate(np.array([[4, 5, 3]]), beam_size=2, alpha=float("nan")),
     ValueError, r"`alpha` must be a finite number >= 0"),
]


@pytest.mark.parametrize(
    "make, error, pattern", [row[1:] for row in BAD], ids=[row[0] for row in BAD]
)
def test_bad_input_gets_a_clear_error(make, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        make()
    assert type(info.value) is error  # not a subclass a backend raised


def test_the_table_is_large_and_unique():
    assert len(BAD) >= 100
    assert len({row[0] for row in BAD}) == len(BAD)


# ------------------------------------------------------------ documented behaviours
def _same_as_float(inputs, **kwargs):
    layer = kerasrnn.GRU(4)
    expected = to_numpy(layer(np.asarray(inputs, "float32")))
    np.testing.assert_allclose(to_numpy(layer(inputs, **kwargs)), expected, rtol=1e-6)


def _mask_as(mask):
    layer = kerasrnn.LSTM(4)
    expected = to_numpy(layer(x, mask=right_padded))
    np.testing.assert_allclose(to_numpy(layer(x, mask=mask)), expected, rtol=1e-6)


DOCUMENTED = [
    # Integer and boolean inputs are cast to the compute dtype (as keras.layers does).
    ("int sequences", lambda: _same_as_float(np.arange(30).reshape(2, 5, 3) % 4)),
    ("bool sequences", lambda: _same_as_float(np.arange(30).reshape(2, 5, 3) % 2 == 0)),
    ("float64 sequences", lambda: _same_as_float(x.astype("float64"))),
    # A mask of numbers means nonzero is valid; a nested Python list is an array.
    ("int mask", lambda: _mask_as(right_padded.astype("int32"))),
    ("float mask", lambda: _mask_as(right_padded.astype("float32") * 3.0)),
    ("Python list mask", lambda: _mask_as(right_padded.tolist())),
    ("list of masks", lambda: _mask_as([right_padded, None])),
    # Keras's implementation options: accepted, the same function.
    ("unroll=True", lambda: kerasrnn.LSTM(4, unroll=True)(x)),
    ("implementation=1", lambda: kerasrnn.LSTM(4, implementation=1)(x)),
    ("use_cudnn=False", lambda: kerasrnn.GRU(4, use_cudnn=False)(x)),
    # No sequences in, no outputs out.
    ("empty batch", lambda: kerasrnn.GRU(4)(np.zeros((0, 5, 3), "float32"), mask=np.zeros((0, 5), bool))),
]


@pytest.mark.parametrize("run", [row[1] for row in DOCUMENTED], ids=[row[0] for row in DOCUMENTED])
def test_documented_behaviour(run):
    run()


def test_a_fused_torch_kernel_never_sees_a_wrong_state_batch():
    """On torch, the fused LSTM kernel given states of another batch size than its
    inputs corrupts memory and aborts the process; the layer checks first."""
    layer = kerasrnn.LSTM(4, stateful=True)
    layer(x)
    assert layer.last_path.startswith("fused:") == FUSED_LSTM
    with pytest.raises(ValueError, match="stateful=True keeps states for batches of 2"):
        layer(np.ones((3, 5, 3), "float32"))
    layer.reset_states()
    np.testing.assert_array_equal(to_numpy(layer.states[0]), np.zeros((2, 4), "float32"))
