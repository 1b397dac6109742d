"""Checks the built site in a real headless browser: the math must be typeset.

    python docs/tools/check_render.py site                      # the default pages
    python docs/tools/check_render.py site --page concepts/bptt/ --screenshot bptt.png

Serves SITE_DIR on 127.0.0.1, opens each page in headless Chromium (`--dump-dom`, after
its scripts ran) and fails unless every formula that `pymdownx.arithmatex` marked was
typeset by KaTeX (a `class="katex"` element inside it), none failed (`katex-error`),
and no raw TeX delimiters (`\\(`, `\\[`, `$$`) are left in the visible text. Exits 0
with a SKIPPED message where no Chromium is installed.
"""

import argparse
import functools
import html.parser
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading

#: The home page and the most equation-heavy page.
DEFAULT_PAGES = ["", "concepts/lstm_gru/"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
RAW_DELIMITERS = ("\\(", "\\)", "\\[", "\\]", "$$")


def find_browser():
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class PageReport(html.parser.HTMLParser):
    """Counts formulas and finds raw TeX in the visible text of a rendered DOM."""

    SKIP = frozenset({"script", "style", "annotation", "code", "pre", "textarea", "noscript"})

    def __init__(self):
        super().__init__()
        self.formulas = 0  # elements arithmatex marked
        self.typeset = 0  # ... that the init script handed to KaTeX
        self.katex = 0  # KaTeX output roots
        self.errors = 0  # formulas KaTeX could not parse
        self.raw = []  # raw delimiters in visible text
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "arithmatex" in classes:
            self.formulas += 1
            if attrs.get("data-katex") == "done":
                self.typeset += 1
        self.katex += "katex" in classes
        self.errors += "katex-error" in classes
        if tag in self.SKIP:
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if self._skip:
            return
        for delimiter in RAW_DELIMITERS:
            if delimiter in data:
                start = max(data.index(delimiter) - 30, 0)
                self.raw.append(data[start : start + 80].strip())

    def problems(self):
        found = []
        if self.typeset < self.formulas:
            found.append(f"{self.formulas - self.typeset} of {self.formulas} formulas not typeset")
        if self.formulas and self.katex < self.formulas:
            found.append(f"{self.formulas} formulas but {self.katex} KaTeX renderings")
        if self.errors:
            found.append(f"{self.errors} KaTeX errors (red formulas)")
        if self.raw:
            found.append(f"raw TeX in the text: {self.raw[:3]}")
        return found


def serve(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run_browser(browser, url, extra, timeout=120):
    with tempfile.TemporaryDirectory(prefix="check-render-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def check_page(browser, base_url, page):
    result = run_browser(browser, base_url + page, ["--dump-dom"])
    if result.returncode != 0 or "<html" not in result.stdout:
        return None, [f"Chromium failed (exit {result.returncode}): {result.stderr[-500:]}"]
    report = PageReport()
    report.feed(result.stdout)
    return report, report.problems()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", help="the built site (mkdocs build's site_dir)")
    parser.add_argument("--page", action="append", help="page path under the site, e.g. concepts/bptt/ (repeatable)")
    parser.add_argument("--screenshot", help="also save a PNG of the (first) page here")
    parser.add_argument("--window", default="1280,1800", help="screenshot size WIDTH,HEIGHT")
    args = parser.parse_args(argv)

    browser = find_browser()
    if browser is None:
        print("check_render: SKIPPED, no Chromium found (Debian: apt-get install chromium).")
        return 0
    if not os.path.isfile(os.path.join(args.site, "index.html")):
        print(f"check_render: {args.site}/index.html is missing; run `mkdocs build` first.")
        return 1

    server = serve(os.path.abspath(args.site))
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = args.page or DEFAULT_PAGES
    failed = False
    try:
        for page in pages:
            report, problems = check_page(browser, base_url, page)
            name = page or "(home)"
            if problems:
                failed = True
                print(f"check_render: FAIL {name}: " + "; ".join(problems))
            else:
                print(f"check_render: ok   {name}: {report.typeset} formulas typeset by KaTeX")
        if args.screenshot:
            shot = os.path.abspath(args.screenshot)
            run_browser(browser, base_url + pages[0], [f"--screenshot={shot}", f"--window-size={args.window}"])
            print(f"check_render: screenshot of {pages[0] or '(home)'} in {shot}")
    finally:
        server.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
