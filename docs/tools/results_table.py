"""mkdocs hook: results tables rendered from a recipe's own `results.json`.

A page writes a fenced block instead of a hand-typed table:

    ```results-table
    file: adding_problem.json
    path: models
    columns: test_mse=test MSE, baseline_mse=predict-1 MSE, steps, seconds=time (s)
    ```

and the build replaces it with a Markdown table of the numbers in
`docs/results/adding_problem.json` (a copy of the recipe's `DIR/results.json`). Keys, one
per line, `key: value`:

- `file` (required): the JSON file, relative to `docs/results/`.
- `path`: dotted keys to the part to tabulate (default: the whole file). That part can be
  a list of records (`{"rows": [{...}, ...]}`: one row each), a mapping of records
  (`{"models": {"lstm": {...}, ...}}`: one row per key, the key in the first column), or
  a flat record (one `key | value` row per scalar).
- `columns`: comma-separated keys, each optionally `key=Header`; dotted keys reach into
  nested records (`grad.log10_ratio`). Default: every scalar key, in file order.
- `rows`: comma-separated keys of a mapping of records, in the order to show them.
- `where`: comma-separated `key=value` filters on the records (`dataset=synthetic`).
- `index`: header of the key column of a mapping of records (default `name`).
- `digits`: significant digits of floats (default 4).
- `caption`: a sentence printed under the table.

A missing file, a bad path or an unknown key is a build warning, so `mkdocs build --strict`
fails rather than publishing a wrong or empty table.
"""

import json
import logging
import math
import os

from markdown_blocks import iter_fences

log = logging.getLogger("mkdocs.hooks.results_table")

FENCE = "results-table"
_KEYS = ("file", "path", "columns", "rows", "where", "index", "digits", "caption")


class ResultsTableError(ValueError):
    """A results-table block that cannot be rendered (the message says why)."""


# ---------------------------------------------------------------- the block
def parse_spec(text):
    """`key: value` lines -> dict; unknown keys and a missing `file` are errors."""
    spec = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise ResultsTableError(
                f"bad line {line!r} in a {FENCE} block: expected `key: value` with key "
                f"one of {', '.join(_KEYS)}"
            )
        spec[key] = value.strip()
    if not spec.get("file"):
        raise ResultsTableError(f"a {FENCE} block needs `file: NAME.json`")
    return spec


def _split(value):
    return [item.strip() for item in value.split(",") if item.strip()] if value else []


def _lookup(record, dotted):
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _is_scalar(value):
    return value is None or isinstance(value, (str, int, float, bool))


def format_value(value, digits=4):
    """Numbers to `digits` significant digits, booleans as yes/no, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.{max(digits - 1, 0)}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    text = str(value) if _is_scalar(value) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(spec, data):
    """A Markdown table (a string) from a parsed spec and the loaded JSON data."""
    digits = int(spec.get("digits") or 4)
    node = data
    if spec.get("path"):
        try:
            node = _lookup(data, spec["path"])
        except KeyError:
            raise ResultsTableError(f"`path: {spec['path']}` is not in {spec['file']}") from None

    columns = []
    for item in _split(spec.get("columns")):
        key, _, header = item.partition("=")
        columns.append((key.strip(), header.strip() or key.strip()))

    index = None  # header of the key column, for a mapping of records
    if isinstance(node, list):
        records = [(None, r) for r in node]
    elif isinstance(node, dict) and node and all(isinstance(v, dict) for v in node.values()):
        index = spec.get("index") or "name"
        names = _split(spec.get("rows")) or list(node)
        unknown = [n for n in names if n not in node]
        if unknown:
            raise ResultsTableError(f"`rows`: {unknown} not in {spec['file']} ({list(node)})")
        records = [(name, node[name]) for name in names]
    elif isinstance(node, dict):
        wanted = columns or [(k, k) for k, v in node.items() if _is_scalar(v)]
        lines = ["| key | value |", "| --- | --- |"]
        for key, header in wanted:
            try:
                lines.append(f"| {header} | {format_value(_lookup(node, key), digits)} |")
            except KeyError:
                raise ResultsTableError(f"key `{key}` missing in {spec['file']}") from None
        return "\n".join(lines)
    else:
        raise ResultsTableError(f"`path` in {spec['file']} leads to {type(node).__name__}, not a table")

    for condition in _split(spec.get("where")):
        key, _, wanted = condition.partition("=")
        key = key.strip()
        records = [
            (name, r) for name, r in records
            if key in r and str(r[key]) == wanted.strip()
        ]
    if not records:
        raise ResultsTableError(f"no records left in {spec['file']} (check `where`/`rows`)")

    if not columns:
        seen = []
        for _, record in records:
            for key, value in record.items():
                if _is_scalar(value) and key not in seen:
                    seen.append(key)
        columns = [(key, key) for key in seen]

    headers = ([index] if index else []) + [header for _, header in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for name, record in records:
        cells = [format_value(name)] if index else []
        for key, _ in columns:
            try:
                cells.append(format_value(_lookup(record, key), digits))
            except KeyError:
                raise ResultsTableError(
                    f"column `{key}` missing in {spec['file']}"
                    + (f" (row {name!r})" if name is not None else "")
                ) from None
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_block(text, results_dir):
    """The Markdown that replaces one block: table, then a source line (and caption)."""
    spec = parse_spec(text)
    path = os.path.join(results_dir, spec["file"])
    if not os.path.isfile(path):
        raise ResultsTableError(f"{spec['file']} is not in {results_dir}")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    table = render_table(spec, data)
    source = f"Numbers from `docs/results/{spec['file']}`"
    if isinstance(data, dict):
        extras = [f"{k}: {data[k]}" for k in ("backend", "device") if data.get(k) is not None and _is_scalar(data[k])]
        if extras:
            source += " (" + ", ".join(extras) + ")"
    caption = f"{source}. {spec['caption']}" if spec.get("caption") else source + "."
    return f"{table}\n\n*{caption}*\n"


# --------------------------------------------------------- Markdown scanning
def replace_blocks(markdown, results_dir, on_error=None):
    """Replaces every top-level ```results-table block (not ones nested in other fences)."""
    lines = markdown.split("\n")
    out, done = [], 0
    for fence in iter_fences(markdown):
        if fence.info.strip() != FENCE:
            continue
        try:
            rendered = render_block(fence.body, results_dir)
        except ValueError as err:  # ResultsTableError, bad JSON, bad `digits`
            if on_error is None:
                raise
            on_error(str(err))
            rendered = f'!!! warning "Results not available"\n    {err}\n'
        out.extend(lines[done : fence.start])
        out.extend(fence.indent + line if line else line for line in rendered.split("\n"))
        done = fence.end + 1
    out.extend(lines[done:])
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if FENCE not in markdown:
        return markdown
    results_dir = os.path.join(config.docs_dir, "results")

    def warn(message):
        log.warning("%s: %s", page.file.src_uri, message)

    return replace_blocks(markdown, results_dir, on_error=warn)
