"""`exmig report`: a change record an admin can attach (HTML for people, Markdown for tickets).

Public surface:

- `model`: the report as plain frozen dataclasses (`Report`, `ServerSection`, `StepOutcome`, `VerifyMatrix`,
  `SectionTable`, ...), built by `gather.build_report` from what exmig already has (the plan's PowerShell as
  `exmig plan --format ps1` prints it, the journal, the verify findings). No I/O there.
- `render_html(report) -> str` (Jinja2, autoescaped, self-contained) and `render_markdown(report) -> str`.
"""

from orchestrator.report.gather import build_report, verify_matrix, verify_not_run
from orchestrator.report.html import render_html
from orchestrator.report.markdown import render_markdown
from orchestrator.report.model import Report, SectionTable

__all__ = ["Report", "SectionTable", "build_report", "render_html", "render_markdown", "verify_matrix",
           "verify_not_run"]
