"""The unstable gradients problem in numbers: W^50, then a real SimpleRNN's gradients.

Back-propagation through time multiplies the error signal by one recurrent Jacobian
per step. For a linear RNN `h_t = x_t W_x + h_{t-1} W_h` the Jacobian is `W_hᵀ`, so
after 50 steps the signal has been multiplied by `(W_hᵀ)^50`:

    W = 2    ->  2^50   ≈ 1.1259e+15   (explodes)
    W = 0.5  ->  0.5^50 ≈ 8.8818e-16   (vanishes)

Part 1 computes that product of Jacobians directly. Part 2 measures the same thing in
real kerasrnn SimpleRNN layers with `kerasrnn.diagnostics.gradient_norms`: over 51
steps the ratio `‖∂L/∂h_1‖ / ‖∂L/∂h_51‖` is the product of 50 Jacobians. A linear RNN
with `W_h = 2·I` or `0.5·I` reproduces `2^50` and `0.5^50` exactly; a tanh RNN with
`W_h = 2·I` saturates (`h_t` settles where `h = tanh(2h)`, `|h| ≈ 0.957`, and each
Jacobian `W_hᵀ diag(1 − h_t²)` shrinks the signal about 6-fold), so the signal vanishes
instead of exploding ("saturated" counts |h| > 0.9 for tanh, h = 0 for ReLU); a ReLU RNN with `W_h = I` (the IRNN at
initialization) carries it back unchanged.

    python docs/examples/unstable_gradients.py                 # backend: $KERAS_BACKEND
    KERAS_BACKEND=torch python docs/examples/unstable_gradients.py --plot grads.png
"""

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STEPS = 50  # Jacobians in the product


def jacobian_products(weights=(2.0, 0.5), steps=STEPS, units=4):
    """`‖(W_hᵀ)^steps‖₂` for `W_h = w·I`: the factor the error signal is multiplied by."""
    out = {}
    for w in weights:
        jacobian = (w * np.eye(units)).T
        product = np.linalg.matrix_power(jacobian, steps)
        out[w] = float(np.linalg.norm(product, 2))
    return out


def simple_rnn(activation, gain, steps=STEPS + 1, units=4):
    import keras

    import kerasrnn

    return keras.Sequential([
        keras.Input((steps, 1)),
        kerasrnn.SimpleRNN(
            units, activation=activation, use_bias=False, name="rnn",
            kernel_initializer=keras.initializers.Constant(0.5),
            recurrent_initializer=keras.initializers.Identity(gain),
        ),
        keras.layers.Dense(1, kernel_initializer="ones"),
    ])


CASES = {
    "linear, W_h = 2·I": ("linear", 2.0),
    "linear, W_h = 0.5·I": ("linear", 0.5),
    "tanh, W_h = 2·I": ("tanh", 2.0),
    "relu, W_h = I (IRNN)": ("relu", 1.0),
}


def measured_ratios(steps=STEPS):
    """`‖∂L/∂h_1‖ / ‖∂L/∂h_{steps+1}‖` (a product of `steps` Jacobians) per case."""
    from kerasrnn.diagnostics import activation_statistics, gradient_norms

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (8, steps + 1, 1)).astype("float32") * 1e-3
    y = np.zeros((8, 1), "float32")
    out = {}
    for label, (activation, gain) in CASES.items():
        model = simple_rnn(activation, gain, steps + 1)
        norms = gradient_norms(model, x, y, loss="mse")["rnn"].mean(axis=0)
        # tol=0.05: within 5% of the range of a limit, |tanh| > 0.9.
        saturation = activation_statistics(model, x, tol=0.05)["rnn"]["h"]["saturation"]
        out[label] = {"ratio": norms[0] / norms[-1], "profile": norms, "saturation": saturation}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", help="write ‖∂L/∂h_t‖ against t to this PNG")
    args = parser.parse_args(argv)

    print(f"Part 1: the product of {STEPS} recurrent Jacobians W_hᵀ, W_h = w·I")
    for w, norm in jacobian_products().items():
        print(f"  w = {w:<4}  ‖(W_hᵀ)^{STEPS}‖ = {norm:.4e}   (w^{STEPS} = {w ** STEPS:.4e})")

    import keras

    print(f"\nPart 2: ‖∂L/∂h_1‖ / ‖∂L/∂h_{STEPS + 1}‖ in a kerasrnn SimpleRNN "
          f"({keras.backend.backend()} backend, kerasrnn.diagnostics.gradient_norms)")
    measured = measured_ratios()
    for label, m in measured.items():
        sat = "   -  " if m["saturation"] is None else f"{m['saturation']:6.2f}"
        print(f"  {label:22} ratio = {m['ratio']:.4e}   log10 = {np.log10(m['ratio']):+7.2f}"
              f"   saturated: {sat}")

    if args.plot:
        from kerasrnn.diagnostics import plot_gradient_norms

        plot_gradient_norms({k: m["profile"] for k, m in measured.items()}, args.plot,
                            title=f"‖∂L/∂h_t‖ over {STEPS + 1} steps of a SimpleRNN")
        print(f"\nPlot: {args.plot}")
    return measured


if __name__ == "__main__":
    main()
