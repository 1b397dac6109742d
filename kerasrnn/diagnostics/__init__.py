"""Diagnostics of the unstable gradients problem in recurrent networks.

- `gradient_norms` / `log10_ratio`: `‖dL/dh_t‖` for every time step of a batch (how far
  the error signal travels back through time) and a one-number summary;
- `activation_statistics` / `saturation_fraction`: mean, variance and saturation of
  each gate and activation (Glorot & Bengio 2010);
- `recurrent_spectrum` / `spectrum_of`: spectral radius and singular values of each
  recurrent matrix (per gate block for LSTM and GRU);
- `diagnose`: all of the above for one batch; `RecurrentDiagnostics`: a Keras callback
  recording them during `fit` to CSV and TensorBoard; `read_csv` reads the CSV back;
  `TensorBoardScalars`: `fit`'s epoch logs as TensorBoard scalars, on any backend;
- `plot_gradient_norms`, `plot_gradient_heatmap`, `plot_saturation_heatmap`: PNGs
  (matplotlib, imported only when a plot is drawn).

All of them run the layers' own cells (`project_inputs`, `step`) through
`kerasrnn.ops.unroll` on every backend; see `kerasrnn.diagnostics.trace`.
"""

from kerasrnn.diagnostics.callback import (
    RecurrentDiagnostics,
    TensorBoardScalars,
    diagnose,
    read_csv,
)
from kerasrnn.diagnostics.gradients import gradient_norms, log10_ratio
from kerasrnn.diagnostics.plots import (
    plot_gradient_heatmap,
    plot_gradient_norms,
    plot_saturation_heatmap,
)
from kerasrnn.diagnostics.saturation import (
    activation_limits,
    activation_statistics,
    saturation_fraction,
)
from kerasrnn.diagnostics.spectrum import recurrent_spectrum, spectrum_of
from kerasrnn.diagnostics.trace import recurrent_layers, traced

__all__ = [
    "RecurrentDiagnostics",
    "TensorBoardScalars",
    "activation_limits",
    "activation_statistics",
    "diagnose",
    "gradient_norms",
    "log10_ratio",
    "plot_gradient_heatmap",
    "plot_gradient_norms",
    "plot_saturation_heatmap",
    "read_csv",
    "recurrent_layers",
    "recurrent_spectrum",
    "saturation_fraction",
    "spectrum_of",
    "traced",
]
