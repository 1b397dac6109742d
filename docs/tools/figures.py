"""mkdocs hook: (re)draws the Concepts figures with the package before the pages are read.

The figures (`docs/assets/figures/*.png`, not committed) are computed by kerasrnn in
`docs/tools/make_figures.py`. They are redrawn when one is missing or older than that
script or any file of `kerasrnn/`, in a subprocess (its own Keras backend: the current
`KERAS_BACKEND`, JAX if unset), so `mkdocs serve` does not redraw them on every edit.
"""

import glob
import logging
import os
import subprocess
import sys

log = logging.getLogger("mkdocs.hooks.figures")

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "make_figures.py")
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _expected_names():
    """The figure names, read from the script without importing Keras."""
    names = []
    with open(SCRIPT, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith('@figure("'):
                names.append(line.split('"')[1])
    return names


def stale(out_dir):
    """Whether a figure is missing or older than its sources."""
    targets = [os.path.join(out_dir, name) for name in _expected_names()]
    if not all(os.path.isfile(t) for t in targets):
        return True
    sources = [SCRIPT, *glob.glob(os.path.join(ROOT, "kerasrnn", "**", "*.py"), recursive=True)]
    return min(os.path.getmtime(t) for t in targets) < max(os.path.getmtime(s) for s in sources)


def on_pre_build(config):
    out_dir = os.path.join(config.docs_dir, "assets", "figures")
    if not stale(out_dir):
        return
    log.info("drawing the Concepts figures with kerasrnn (docs/tools/make_figures.py)")
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, SCRIPT, out_dir], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False,
    )
    if result.returncode != 0:
        log.warning("make_figures.py failed:\n%s", result.stderr[-4000:])
