"""The fenced code blocks of a Markdown page, as the docs hooks and tests read them."""

import re
from typing import NamedTuple

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")


class Fence(NamedTuple):
    start: int  # line index of the opening fence (0-based)
    end: int  # line index of the closing fence (the last line if unclosed)
    indent: str  # the opening fence's indentation (blocks inside tabs and lists)
    info: str  # what follows the opening fence: "python", "results-table", ...
    body: str  # the lines between the fences, less the indentation

    @property
    def language(self):
        return self.info.split()[0].lstrip("{.").rstrip("}") if self.info else ""


def iter_fences(markdown):
    """Yields each top-level fenced block; blocks nested in a longer fence are its body."""
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        end = i + 1
        while end < len(lines):
            closing = lines[end].strip()
            if len(closing) >= len(fence) and set(closing) == {fence[0]}:
                break
            end += 1
        body = "\n".join(
            line[len(indent):] if line.startswith(indent) else line.lstrip()
            for line in lines[i + 1 : end]
        )
        yield Fence(i, min(end, len(lines) - 1), indent, match["info"], body)
        i = end + 1
