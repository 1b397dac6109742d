"""Every code example of the docs runs, on the current backend.

Each page's ```python blocks (and ```pycon doctests) run in order in one namespace, like a
notebook, in a temporary directory. A block preceded by the line
`<!-- docs-test: skip -->` is shown but not run. Docstring examples are run by pytest's
`--doctest-modules` instead. Also checked here: the two commands of Getting started are
the README's, and every public class and function has a `:::` line somewhere in docs/.
"""

import doctest
import importlib
import inspect
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.append(str(DOCS / "tools"))  # the docs build tools: markdown_blocks

from markdown_blocks import iter_fences

SKIP_MARKER = "<!-- docs-test: skip -->"
RUNNABLE = {"python", "py", "pycon"}


def runnable_blocks(path):
    """The page's fences that run, each as `(fence, source)`."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    blocks = []
    for fence in iter_fences(text):
        if fence.language not in RUNNABLE:
            continue
        before = [line.strip() for line in lines[: fence.start] if line.strip()]
        if before and before[-1] == SKIP_MARKER:
            continue
        blocks.append(fence)
    return blocks


def pages_with_examples():
    pages = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
    return [p for p in pages if p.is_file() and runnable_blocks(p)]


@pytest.mark.parametrize(
    "page", pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    saved_environ = dict(os.environ)  # examples may set KERAS_BACKEND: it must not leak
    namespace = {"__name__": "__docs_example__"}
    try:
        for fence in runnable_blocks(page):
            # Pad with blank lines so tracebacks give the line number in the .md file.
            padding = "\n" * (fence.start + 1)
            if fence.language == "pycon":
                test = doctest.DocTestParser().get_doctest(
                    padding + fence.body, namespace, page.name, str(page), 0
                )
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
                runner.run(test, clear_globs=False)
                assert not runner.failures, f"{page}:{fence.start + 1}: doctest failed"
            else:
                exec(compile(padding + fence.body, str(page), "exec"), namespace)  # noqa: S102 (the point)
    finally:
        # Put back only what an example changed. Clearing and refilling the whole
        # environment would call unsetenv/setenv for every variable while JAX's, XLA's
        # and TensorFlow's own threads may be reading it (getenv is not safe against
        # that): the JAX session died twice in this file with a segfault in no Python
        # thread.
        for key in set(os.environ) - set(saved_environ):
            del os.environ[key]
        for key, value in saved_environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _section_commands(path, heading):
    """The ```bash blocks between `heading` and the next heading of the same level."""
    text = path.read_text(encoding="utf-8")
    level = heading.split(" ")[0]
    match = re.search(rf"^{re.escape(heading)}\s*$(.*?)(?=^{level} |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{path.name} has no section {heading!r}"
    return [f.body.strip() for f in iter_fences(match.group(1)) if f.language == "bash"]


def test_getting_started_has_the_readme_commands():
    readme = _section_commands(ROOT / "README.md", "## The two commands")
    docs = _section_commands(DOCS / "getting_started.md", "## The two commands")
    assert len(readme) == 2, readme
    assert docs == readme, (
        "docs/getting_started.md must show the README's two commands verbatim; "
        f"README: {readme}, docs: {docs}"
    )


# ----------------------------------------------------------- API reference
# Public subpackages that `import kerasrnn` does not import (they pull optional packages).
SUBPACKAGES = ["datasets", "diagnostics", "seq2seq"]


def _public_objects():
    """Classes and functions named in `__all__` of kerasrnn and of its public modules."""
    import kerasrnn

    found = {}
    modules = [kerasrnn] + [
        getattr(kerasrnn, name) for name in kerasrnn.__all__
        if inspect.ismodule(getattr(kerasrnn, name))
    ] + [importlib.import_module(f"kerasrnn.{name}") for name in SUBPACKAGES]
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            own = getattr(obj, "__module__", "").startswith("kerasrnn")
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and own:
                found.setdefault(id(obj), f"{module.__name__}.{name}")
    return found


def _resolve(dotted):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_public_class_and_function_is_documented():
    documented = set()
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"^:::\s+([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE):
            obj = _resolve(target)
            documented.add(id(obj))
            if inspect.ismodule(obj):  # a module directive documents its public members
                documented.update(id(getattr(obj, n)) for n in getattr(obj, "__all__", []))
    missing = sorted(name for key, name in _public_objects().items() if key not in documented)
    assert not missing, (
        f"public API without a `::: name` line in any docs/ page: {missing}. Add one to "
        "docs/layers/index.md (or the page of that part)."
    )
