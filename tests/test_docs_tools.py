"""The docs build's own tools (docs/tools/): results tables, optional pages, fences, checks;
and that every table of the docs is one table.

Pure Python: no mkdocs and no browser needed (the `docs` nox session runs those).
"""

import json
import pathlib
import re
import sys

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tools"
sys.path.append(str(TOOLS))

import check_render
import optional_pages
import results_table
from markdown_blocks import iter_fences

ADDING = {
    "backend": "jax",
    "models": {
        "tanh": {"test_mse": 0.1671234, "steps": 3000, "seconds": 61.25, "grad": {"log10_ratio": -9.5}},
        "lstm": {"test_mse": 0.0004567, "steps": 3000, "seconds": 120.0, "grad": {"log10_ratio": -0.8}},
    },
}
FORECAST = {
    "rows": [
        {"dataset": "synthetic", "task": "one_step", "model": "naive", "val_mse": 0.0202},
        {"dataset": "synthetic", "task": "one_step", "model": "lstm", "val_mse": 0.00251},
        {"dataset": "sunspots", "task": "one_step", "model": "lstm", "val_mse": 512.0},
    ]
}


@pytest.fixture
def results_dir(tmp_path):
    (tmp_path / "adding_problem.json").write_text(json.dumps(ADDING))
    (tmp_path / "forecasting.json").write_text(json.dumps(FORECAST))
    (tmp_path / "sentiment.json").write_text(json.dumps({"test_accuracy": 0.8912, "epochs": 4}))
    return tmp_path


def table(spec_text, results_dir):
    return results_table.render_block(spec_text, str(results_dir)).split("\n")


def test_mapping_of_records(results_dir):
    lines = table(
        "file: adding_problem.json\npath: models\nindex: model\nrows: lstm, tanh\n"
        "columns: test_mse=test MSE, grad.log10_ratio=log10 ratio, seconds",
        results_dir,
    )
    assert lines[0] == "| model | test MSE | log10 ratio | seconds |"
    assert lines[2] == "| lstm | 4.567e-04 | -0.8 | 120 |"  # order of `rows`, nested key
    assert lines[3] == "| tanh | 0.1671 | -9.5 | 61.25 |"
    assert "docs/results/adding_problem.json` (backend: jax)" in lines[-2]


def test_list_of_records_with_filter(results_dir):
    lines = table(
        "file: forecasting.json\npath: rows\nwhere: dataset=synthetic, task=one_step\n"
        "columns: model, val_mse=validation MSE",
        results_dir,
    )
    assert lines[:4] == [
        "| model | validation MSE |",
        "| --- | --- |",
        "| naive | 0.0202 |",
        "| lstm | 0.00251 |",
    ]
    assert not any("sunspots" in line or "512" in line for line in lines)


def test_a_column_some_rows_lack_gets_empty_cells(tmp_path):
    rows = [{"model": "rnn", "mse": 0.5}, {"model": "ln_rnn", "note": "skipped"}]
    (tmp_path / "f.json").write_text(json.dumps({"rows": rows}))
    lines = table("file: f.json\npath: rows\ncolumns: model, mse, note", tmp_path)
    assert lines[2:4] == ["| rnn | 0.5 |  |", "| ln_rnn |  | skipped |"]


def test_flat_record_and_caption(results_dir):
    lines = table("file: sentiment.json\ncaption: IMDB test set.", results_dir)
    assert lines[:4] == ["| key | value |", "| --- | --- |", "| test_accuracy | 0.8912 |", "| epochs | 4 |"]
    assert lines[-2].endswith("IMDB test set.*")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("file: missing.json", "missing.json is not in"),
        ("file: adding_problem.json\npath: nowhere", "`path: nowhere`"),
        ("file: adding_problem.json\npath: models\ncolumns: accuracy", "column `accuracy`"),
        ("file: adding_problem.json\npath: models\nrows: gru", "`rows`"),
        ("file: forecasting.json\npath: rows\nwhere: model=gru", "no records left"),
        ("file: adding_problem.json\ncolour: red", "bad line"),
        ("path: models", "needs `file"),
    ],
)
def test_bad_blocks_name_the_problem(results_dir, spec, message):
    with pytest.raises(results_table.ResultsTableError, match=message.replace("(", r"\(")):
        results_table.render_block(spec, str(results_dir))


def test_only_top_level_blocks_are_replaced_and_errors_are_reported(results_dir):
    page = (
        "Intro\n\n```results-table\nfile: sentiment.json\n```\n\n"
        "````markdown\n```results-table\nfile: sentiment.json\n```\n````\n\n"
        "```results-table\nfile: absent.json\n```\nEnd"
    )
    errors = []
    out = results_table.replace_blocks(page, str(results_dir), on_error=errors.append)
    assert out.startswith("Intro\n\n| key | value |")
    assert "````markdown\n```results-table\nfile: sentiment.json\n```\n````" in out  # shown as is
    assert errors == [f"absent.json is not in {results_dir}"]
    assert '!!! warning "Results not available"' in out and out.endswith("End")


def test_number_formatting():
    fmt = results_table.format_value
    assert [fmt(0.16712), fmt(1234.5), fmt(98765.4), fmt(2e-5), fmt(0.0), fmt(7)] == [
        "0.1671", "1234", "98765", "2.000e-05", "0", "7",
    ]
    assert [fmt(True), fmt(None), fmt("a|b")] == ["yes", "—", "a\\|b"]


def test_fences_nest_and_dedent():
    text = "x\n````md\n```python\nhidden()\n```\n````\n=== \"Tab\"\n\n    ```python\n    run()\n    ```\n"
    fences = list(iter_fences(text))
    assert [(f.language, f.body) for f in fences] == [("md", "```python\nhidden()\n```"), ("python", "run()")]
    assert fences[1].start == 8 and fences[1].indent == "    "


def test_optional_pages_unlink_and_prune():
    missing = {"recipes/sentiment.md", "concepts/unstable_gradients.md"}
    text = (
        "See [the sentiment recipe](../recipes/sentiment.md#results), "
        "[LSTM](lstm_gru.md) and [gradients](unstable_gradients.md). ![fig](x.md)"
    )
    out = optional_pages.unlink_missing(text, "concepts/bptt.md", missing)
    assert out == "See the sentiment recipe, [LSTM](lstm_gru.md) and gradients. ![fig](x.md)"
    nav = [
        {"Home": "index.md"},
        {"Concepts": [{"BPTT": "concepts/bptt.md"}, {"Gradients": "concepts/unstable_gradients.md"}]},
        {"Recipes": ["recipes/sentiment.md"]},
    ]
    assert optional_pages._prune(nav, missing) == [
        {"Home": "index.md"},
        {"Concepts": [{"BPTT": "concepts/bptt.md"}]},
    ]


def test_render_check_finds_untypeset_math():
    good = (
        '<html><body><p>State <span class="arithmatex" data-katex="done"><span class="katex">'
        '<annotation encoding="application/x-tex">h_t</annotation>h</span></span></p>'
        "<pre><code>print('\\(not math\\)')</code></pre></body></html>"
    )
    report = check_render.PageReport()
    report.feed(good)
    assert report.problems() == [] and report.typeset == 1
    bad = '<html><body><div class="arithmatex">\\[x^2\\]</div><span class="katex-error">x</span></body></html>'
    report = check_render.PageReport()
    report.feed(bad)
    problems = " ".join(report.problems())
    assert "1 of 1 formulas not typeset" in problems and "KaTeX errors" in problems
    assert "raw TeX" in problems


def test_doctests_are_fenced_for_the_reference():
    griffe_doctests = pytest.importorskip("griffe_doctests", exc_type=ImportError)
    text = "Summary.\n\nExample:\n\n>>> 1 + 1\n2\n\nReference:\n    A paper.\n\n```\n>>> kept\n```"
    assert griffe_doctests.fence_doctests(text) == (
        "Summary.\n\nExample:\n\n```pycon\n>>> 1 + 1\n2\n```\n\nReference:\n    A paper.\n\n```\n>>> kept\n```"
    )


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _broken_tables(markdown):
    """Line numbers (1-based) of table rows that start a table but are not its header:
    a row after a blank line whose next line is not a `| --- |` separator. A stray blank
    line inside a table makes Markdown end it there and print the rest as text."""
    lines = markdown.split("\n")
    fenced = {n for f in iter_fences(markdown) for n in range(f.start, f.end + 1)}
    broken = []
    for n, line in enumerate(lines):
        starts = line.lstrip().startswith("|") and (n == 0 or not lines[n - 1].lstrip().startswith("|"))
        if starts and n not in fenced and not (n + 1 < len(lines) and _SEPARATOR.match(lines[n + 1])):
            broken.append(n + 1)
    return broken


def test_broken_table_check_finds_a_split_table():
    table = "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
    assert _broken_tables(table) == []
    assert _broken_tables(table + "\n| 3 | 4 |\n") == [5]
    assert _broken_tables("```\n| not | a table |\n```\n") == []


@pytest.mark.parametrize(
    "page",
    [TOOLS.parents[1] / "README.md", *sorted(TOOLS.parent.rglob("*.md"))],
    ids=lambda p: str(p.relative_to(TOOLS.parents[1])),
)
def test_every_docs_table_starts_with_its_header(page):
    assert _broken_tables(page.read_text(encoding="utf-8")) == [], f"{page}: a table row outside a table"
