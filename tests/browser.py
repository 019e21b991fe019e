"""A real headless browser for the HTML report's tests: Debian's ``chromium``, no driver.

:func:`rendered` opens a page with a probe script appended that writes each drawing's laid-out
size (``getBoundingClientRect``, ``getBBox``) into ``data-`` attributes, then dumps the DOM;
:class:`Dom` reads the dump with the standard library's parser.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

PROBE = """<script>
for (const svg of document.querySelectorAll("svg")) {
  const box = svg.getBoundingClientRect(); svg.dataset.w = box.width; svg.dataset.h = box.height; }
for (const g of document.querySelectorAll("svg g.bar, svg path.series")) {
  const box = g.getBBox(); g.dataset.bw = box.width; g.dataset.bh = box.height; }
document.body.dataset.scripts = document.scripts.length;
</script>"""


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=timeout)


def rendered(page: Path, script: str = "") -> Dom:
    """The DOM of ``page`` as the browser laid it out (sizes in ``data-w``/``data-h``/``data-bw``/``data-bh``),
    after ``script`` (JavaScript) ran in it."""
    probed = page.with_name(page.stem + ".probed.html")
    probe = PROBE.replace("</script>", script + "</script>")
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    result = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return Dom(result.stdout)


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element] = []
        self.text_parts: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(self.text_parts) + "".join(child.text() for child in self.children)

    def iter(self) -> list[Element]:
        return [self, *(element for child in self.children for element in child.iter())]

    def find_all(self, tag: str, cls: str | None = None) -> list[Element]:
        return [element for element in self.iter()[1:]
                if element.tag == tag and (cls is None or cls in element.classes)]


VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr", "area", "base", "embed", "param",
        "track"}


class Dom(HTMLParser):
    """The element tree of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self._open = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self._open)
        self._open.children.append(element)
        if tag not in VOID:
            self._open = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.children.append(Element(tag, {name: value or "" for name, value in attrs}, self._open))

    def handle_endtag(self, tag: str) -> None:
        element: Element | None = self._open
        while element is not None and element.tag != tag:
            element = element.parent
        if element is not None and element.parent is not None:
            self._open = element.parent

    def handle_data(self, data: str) -> None:
        self._open.text_parts.append(data)

    def find_all(self, tag: str, cls: str | None = None) -> list[Element]:
        return self.root.find_all(tag, cls)
