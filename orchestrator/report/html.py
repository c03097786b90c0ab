"""The report as one self-contained HTML page (Jinja2 with autoescaping: every value is escaped)."""

from __future__ import annotations

from functools import cache

import jinja2

from orchestrator.report.model import Report


@cache
def _environment() -> jinja2.Environment:
    # autoescape=True for every template, not select_autoescape by file name: the template's name ends in .j2.
    # StrictUndefined: a misspelt field is an error in the tests, not an empty cell in someone's record.
    return jinja2.Environment(loader=jinja2.PackageLoader("orchestrator.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_html(report: Report) -> str:
    return _environment().get_template("report.html.j2").render(r=report)
