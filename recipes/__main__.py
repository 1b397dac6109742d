"""`python -m recipes NAME [flags]`: see `recipes.cli`."""

import sys

from recipes.cli import main

sys.exit(main(prog="python -m recipes"))
