"""The report's data and renderers without a browser or a lab: what the status line says for each state of a
journal, the optional sections of issue 17, Markdown's escaping and fences, and the command's one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from orchestrator.journal import Journal, StepRecord
from orchestrator.playbook import load_playbook
from orchestrator.report import SectionTable, build_report, render_html, render_markdown, verify_not_run
from orchestrator.report.markdown import escape, fenced
from tests.conftest import CliResult
from tests.e2e.conftest import LAB_PLAYBOOK
from tests.report.conftest import markdown_html

PLAYBOOK = load_playbook(LAB_PLAYBOOK).playbook


def _journal(*records: StepRecord, csr: bool = False, issued: bool = False) -> Journal:
    journal = Journal(path=Path("unused.json"), playbook="lab.yml", csr_pem="CSR" if csr else None,
                      issued_thumbprint="AB" * 20 if issued else None)
    for r in records:
        journal.steps[f"{r.server}:{r.step}"] = r
    return journal


def _status(journal: Journal | None) -> str:
    return build_report(PLAYBOOK, "lab.yml", {}, [], journal, verify_not_run("x"), "now", "0").status


def _record(server: str, step: str, outcome: str, message: str | None = None) -> StepRecord:
    return StepRecord(step, server, outcome, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00", message)


def test_the_status_line_follows_the_journal() -> None:
    assert _status(None) == "planned, not run yet"
    assert _status(_journal()) == "planned, not run yet"
    done = _record("EX2010", "request", "changed")
    assert _status(_journal(done, csr=True)) == \
        "waiting for the CA: the request is made, the signed certificate not yet imported"
    assert _status(_journal(done, csr=True, issued=True)) == "every step run so far is done"
    assert _status(_journal(done, _record("EX2007", "copy", "failed", "no"), _record("EX2007", "import", "failed"),
                            csr=True, issued=True)) == "failed on EX2007 (copy, import)"
    assert _status(_journal(done, _record("workstation", "issue", "failed"))) == "failed on this machine"
    assert _status(_journal(done, _record("EX2007", "copy", "running"))) == \
        "interrupted: 1 step(s) started and not recorded as finished"


class _Text(HTMLParser):
    """The text of the element with `id`, as a parser reads the page (a cross-check of the template's escaping
    that needs no browser)."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.depth, self.text = wanted, 0, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth or ("id", self.wanted) in attrs:
            self.depth += 1
            self.text += " "  # cells and items apart, as a browser lays them out

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text += data


def _section_text(page: str, section: str) -> str:
    parser = _Text(section)
    parser.feed(page)
    return " ".join(parser.text.split())


def test_names_in_use_and_dns_changes_are_optional_inputs() -> None:
    absent = build_report(PLAYBOOK, "lab.yml", {}, [], None, verify_not_run("x"), "now", "0")
    page, md = render_html(absent), render_markdown(absent)
    tail = "not known yet: the servers are read when exmig run first connects (exmig run --check shows it now)."
    assert _section_text(page, "names-in-use") == f"Names in use The names-in-use table is {tail}"
    assert _section_text(page, "dns-changes") == f"DNS changes still to make The list of DNS changes is {tail}"
    assert f"_The list of DNS changes is {tail}_" in md

    given = build_report(PLAYBOOK, "lab.yml", {}, [], None, verify_not_run("x"), "now", "0",
                         names_in_use=SectionTable(("Name", "Used by"), (("mail.mitserv.net", "<OWA> | EWS"),)),
                         dns_changes=SectionTable(("Name", "Change"), ()))
    page, md = render_html(given), render_markdown(given)
    assert _section_text(page, "names-in-use") == "Names in use Name Used by mail.mitserv.net <OWA> | EWS"
    assert _section_text(page, "dns-changes") == "DNS changes still to make None."
    assert "<td>mail.mitserv.net</td>\n<td>&lt;OWA&gt; | EWS</td>" in markdown_html(md)


def test_markdown_escapes_inline_values_and_fences_code_beyond_its_backticks() -> None:
    assert escape("a|b *c* <d> [e](f) `g` \\ &amp;\nh") == "a\\|b \\*c\\* \\<d\\> \\[e\\]\\(f\\) \\`g\\` \\\\ \\&amp; h"
    code = "Write-Host '```'\r\n````x"
    block = fenced(code, "powershell")
    assert block.startswith("`````powershell\n") and block.endswith("\n`````")
    assert markdown_html(block) == '<pre><code class="language-powershell">Write-Host \'```\'\n````x\n</code></pre>\n'


def test_an_unwritable_out_is_one_line_naming_it(tmp_path: Path, exmig: Callable[..., CliResult]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = exmig("report", LAB_PLAYBOOK, "--out", blocker / "record.html", "--no-verify")
    assert result.code == 2
    assert result.err.startswith(f"exmig: error: --out {blocker / 'record.html'}: cannot write (")
    assert result.err.endswith("; choose another file\n") and result.err.count("\n") == 1


def test_the_record_goes_to_stdout_without_out(exmig: Callable[..., CliResult]) -> None:
    result = exmig("report", LAB_PLAYBOOK, "--no-verify", "--format", "md")
    assert result.code == 0 and result.err == ""
    assert result.out.startswith("# Certificate change record: C=US, S=My State")


@pytest.mark.parametrize("args", [["--format", "pdf"], ["--verify-within", "0"], ["--ca-file", "missing.pem"]])
def test_bad_options_are_usage_errors(args: list[str], exmig: Callable[..., CliResult]) -> None:
    result = exmig("report", LAB_PLAYBOOK, *args)
    assert result.code == 2 and result.err.startswith("exmig: error: ") and result.err.count("\n") == 1
