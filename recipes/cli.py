"""`kerasrnn-recipe NAME [flags]`: run a recipe, as `python -m recipes.NAME [flags]` does.

    kerasrnn-recipe --list                        # the recipes and what they train
    kerasrnn-recipe adding_problem --backend jax
    kerasrnn-recipe translation --help            # a recipe's flags
    python -m recipes translation --smoke         # the same, without the console script

The recipe module runs as `__main__` (with `runpy`), so it chooses its backend before
Keras is imported exactly as `python -m recipes.NAME` does.
"""

import runpy
import sys

from recipes import common  # standard library only: Keras is not imported

RECIPES = {
    "adding_problem": "tanh RNN, IRNN, LSTM and GRU on the adding problem (Le et al. 2015)",
    "sentiment": "movie-review polarity on IMDB and MR (sequence → vector)",
    "translation": "German → English on Multi30k with attention and beam search",
    "forecasting": "Géron's time series and sunspots (one step, ten steps, seq2seq)",
    "captioning": "spell a digit image's name with a decoder RNN (vector → sequence)",
}


def usage(prog="kerasrnn-recipe"):
    names = "\n".join(f"  {name:16} {what}" for name, what in RECIPES.items())
    return f"usage: {prog} NAME [flags]   (NAME --help lists its flags)\n\nrecipes:\n{names}"


def main(argv=None, prog="kerasrnn-recipe"):
    """Runs the recipe `argv[0]` with the flags after it; `prog` is the command's name
    in the usage lines (`python -m recipes` for `recipes/__main__.py`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(usage(prog))
        return 0
    name = argv[0].replace("-", "_")
    if name not in RECIPES:
        raise SystemExit(f"error: no recipe {argv[0]!r}.\n\n{usage(prog)}")
    sys.argv = [f"{prog} {name}", *argv[1:]]
    common.COMMAND = f"{prog} {argv[0]}"  # for --help: runpy sets sys.argv[0] to the file
    try:
        runpy.run_module(f"recipes.{name}", run_name="__main__", alter_sys=True)
    finally:
        common.COMMAND = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
