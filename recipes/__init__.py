"""Training recipes for kerasrnn, one file each: `adding_problem`, `sentiment`,
`translation`, `forecasting`, `captioning`.

Run one with `python -m recipes.NAME [flags]` (from a clone or an installed wheel) or
`kerasrnn-recipe NAME [flags]`; `recipes.common` and `recipes.training` hold what they
share. Importing this package imports nothing else (Keras reads its backend when first
imported, which a recipe arranges).
"""
