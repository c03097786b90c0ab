"""Fixtures for `exmig report`: one headless Chromium for the folder, a playbook with hostile values, and the
checks every rendered report must pass in the browser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from orchestrator.cli import main
from orchestrator.playbook import Playbook
from tests.report.browser import Chromium, chromium

# Values from the playbook that would run, load or break something if a renderer pasted them: a script, an
# element with an event handler that would fetch (and so show up as a request), quotes of every kind, an
# entity, Markdown's table bar, emphasis and link syntax. Both pass the playbook's validation.
HOSTILE_FRIENDLY_NAME = """<script>alert("fn")</script>'&amp;"|*_[x](y)`"""
HOSTILE_ORGANIZATION = """"><img src=x onerror=alert(1)> & 'O' | **b** <b>"""


def hostile(playbook: Playbook) -> Playbook:
    spec = playbook.certificate
    subject = spec.subject.model_copy(update={"O": HOSTILE_ORGANIZATION})
    return playbook.model_copy(update={"certificate": spec.model_copy(
        update={"friendly_name": HOSTILE_FRIENDLY_NAME, "subject": subject})})


@pytest.fixture(scope="package")
def browser() -> Iterator[Chromium]:
    with chromium() as b:
        yield b


def report(playbook: Path, out: Path, *args: str) -> Path:
    """`exmig report` through the CLI's entry point, as the admin runs it."""
    code = main(["report", str(playbook), "--out", str(out), *args])
    assert code == 0
    return out


def plan_scripts(playbook: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """`exmig plan --format ps1`'s scripts per server, as it prints them."""
    capsys.readouterr()
    assert main(["plan", str(playbook), "--format", "ps1"]) == 0
    printed = capsys.readouterr().out
    scripts: dict[str, str] = {}
    chunks = printed.split("# ===== ")[1:]
    for i, chunk in enumerate(chunks):
        heading, _, text = chunk.partition("\n")
        # The CLI joins the scripts (each ending in a newline) with one more newline.
        scripts[heading.removesuffix(".ps1 =====")] = text if i == len(chunks) - 1 else text.removesuffix("\n")
    return scripts


@dataclass
class Page:
    """A report as the browser rendered it."""

    html: str
    dom: dict[str, Any]
    screenshot: Path


# Read back from the DOM as rendered: what the admin sees, not what the HTML source says.
DOM = """(() => {
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  const rows = (sel) => Array.from(document.querySelectorAll(sel + ' tbody tr'))
      .map(tr => Array.from(tr.cells).map(td => td.textContent));
  return {
    title: document.title,
    servers: Array.from(document.querySelectorAll('section.server')).map(s => s.dataset.server),
    powershell: Object.fromEntries(Array.from(document.querySelectorAll('section.server')).map(
        s => [s.dataset.server, (s.querySelector('pre.powershell') || {}).textContent || null])),
    steps: Object.fromEntries(Array.from(document.querySelectorAll('section.server')).map(
        s => [s.dataset.server, Array.from(s.querySelectorAll('table.steps tbody tr'))
                  .map(tr => Array.from(tr.cells).map(td => td.textContent))])),
    warnings: Object.fromEntries(Array.from(document.querySelectorAll('section.server')).map(
        s => [s.dataset.server, Array.from(s.querySelectorAll('ul.warnings li')).map(li => li.textContent)])),
    status: text('#status'),
    friendly_name: text('#friendly-name'),
    subject: text('#certificate dd'),
    issued_thumbprint: text('#issued-thumbprint'),
    csr: text('#csr'),
    verify_note: text('#verify-note'),
    verify_rows: rows('#verify'),
    chain_rows: rows('#certificate'),
    names_in_use: text('#names-in-use'),
    dns_changes: text('#dns-changes'),
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img').length,
    handlers: Array.from(document.querySelectorAll('*')).filter(
        e => Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
  };
})()"""


def open_in_browser(browser: Chromium, path: Path, shot: Path) -> Page:
    """The page loads with no console message of warning level or above, no exception and no request but the
    file itself; then its DOM and a full-page screenshot."""
    visit = browser.visit(path)
    assert visit.loaded, path
    assert visit.errors == [], visit.errors
    assert visit.requests == [visit.url], visit.other_requests
    dom = browser.evaluate(DOM)
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return Page(path.read_text(encoding="utf-8"), dom, shot)


def markdown_html(text: str) -> str:
    """The Markdown as a CommonMark renderer with raw HTML allowed (as GitHub's, before its sanitizer) and GFM
    tables turns it into HTML."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
