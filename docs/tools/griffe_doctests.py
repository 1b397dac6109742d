"""griffe extension: docstring doctests (`>>>` blocks) render as Python console code.

The docstrings put their `Example:` doctests at the section title's indentation, which
Google-style parsing reads as plain text (and Markdown as nested quotes). This wraps
each run of `>>>` lines and their expected output in a ```pycon fence before the
docstring is parsed. The docstrings themselves are unchanged: pytest's doctest runner
reads them as they are.
"""

import griffe


def fence_doctests(text):
    """Wraps each doctest (from a `>>>` line to the next blank line) in a pycon fence."""
    out, in_fence, in_doctest, indent = [], False, False, ""
    for line in text.split("\n"):
        stripped = line.lstrip()
        if in_doctest and not stripped:
            out.append(indent + "```")
            in_doctest = False
        if not in_doctest and stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and not in_doctest and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(indent + "```pycon")
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append(indent + "```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
