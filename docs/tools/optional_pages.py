"""mkdocs hook: pages that other branches add slot in when they exist.

`mkdocs.yml` lists such pages under `extra.optional_pages` and in the nav. While one is
absent from `docs/`, this hook drops its nav entry and turns Markdown links to it into
plain text, so `mkdocs build --strict` passes; once the page exists, the nav entry and
the links come back by themselves. Every page not listed stays strict: a nav entry or a
link to a missing page still fails the build.
"""

import logging
import os
import posixpath
import re

log = logging.getLogger("mkdocs.hooks.optional_pages")

_missing = set()

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s#]+\.md)(?P<anchor>#[^)\s]*)?\)")


def _prune(nav, missing):
    """The nav without entries that point to a missing page (and without empty sections)."""
    kept = []
    for item in nav:
        if isinstance(item, str):
            if item not in missing:
                kept.append(item)
            continue
        ((title, value),) = item.items()
        if isinstance(value, list):
            value = _prune(value, missing)
            if value:
                kept.append({title: value})
        elif value not in missing:
            kept.append(item)
    return kept


def on_config(config):
    optional = config.extra.get("optional_pages") or []
    _missing.clear()
    _missing.update(
        page for page in optional if not os.path.isfile(os.path.join(config.docs_dir, page))
    )
    if _missing:
        log.info("optional pages not (yet) in docs/: %s", ", ".join(sorted(_missing)))
        if config.nav:
            config.nav = _prune(config.nav, _missing)
    return config


def unlink_missing(markdown, page_uri, missing):
    """Replaces `[text](target.md)` by `text` where target resolves to a missing page."""
    base = posixpath.dirname(page_uri)

    def replace(match):
        target = posixpath.normpath(posixpath.join(base, match["target"]))
        return match["text"] if target in missing else match[0]

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):
    if not _missing:
        return markdown
    return unlink_missing(markdown, page.file.src_uri, _missing)
