// Typesets the math that pymdownx.arithmatex (generic mode) leaves in the page:
// <span class="arithmatex">\(...\)</span> inline and <div class="arithmatex">\[...\]</div>
// for display math. KaTeX is served with the site (assets/katex), not from a CDN.
(function () {
  "use strict";

  function strip(tex) {
    tex = tex.trim();
    var pairs = [["\\(", "\\)"], ["\\[", "\\]"], ["$$", "$$"], ["$", "$"]];
    for (var i = 0; i < pairs.length; i++) {
      var open = pairs[i][0], close = pairs[i][1];
      if (tex.length >= open.length + close.length &&
          tex.slice(0, open.length) === open && tex.slice(-close.length) === close) {
        return tex.slice(open.length, tex.length - close.length);
      }
    }
    return tex;
  }

  function typeset(root) {
    var nodes = root.querySelectorAll(".arithmatex");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      if (el.getAttribute("data-katex") === "done") continue;
      // throwOnError: false draws a bad formula in red with class katex-error;
      // docs/tools/check_render.py fails the build check on any of those.
      katex.render(strip(el.textContent), el, {
        displayMode: el.tagName === "DIV",
        throwOnError: false,
      });
      el.setAttribute("data-katex", "done");
    }
  }

  if (typeof document$ !== "undefined") {
    // Material for MkDocs: runs on the first load and after each instant navigation.
    document$.subscribe(function () { typeset(document.body); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { typeset(document.body); });
  }
})();
