"""`exmig report` for a fresh plan, a finished lab run and a run that failed on one server, each opened in
headless Chromium: loads with no console error and no request, shows every server, hostile playbook values come
out as text, no secret; the Markdown form of the same record, rendered by a CommonMark renderer, stays inert."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, load_playbook
from tests.e2e.conftest import LAB_PLAYBOOK, Lab, build_lab, put_file_in_the_way, write_playbook
from tests.e2e.test_warnings import _warn_in
from tests.report.browser import Chromium
from tests.report.conftest import (
    HOSTILE_FRIENDLY_NAME,
    HOSTILE_ORGANIZATION,
    hostile,
    markdown_html,
    open_in_browser,
    plan_scripts,
    report,
)

HOSTILE_WARNING = '<script>alert("warn")</script> a certificate with [brackets] | takes "precedence"'
SERVERS = ["EX2010", "EX2007"]


def _journal(lab: Lab) -> dict:
    return json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())


def _assert_inert_markdown(md: str) -> None:
    rendered = markdown_html(md)
    # Raw HTML would pass through this renderer: none of the hostile markup may arrive as elements.
    assert not re.search(r"<(script|img|b)[\s>]", rendered), rendered[:2000]
    # Outside code blocks the values arrive as text, entities and all.
    assert "&lt;script&gt;alert(&quot;fn&quot;)&lt;/script&gt;'&amp;amp;&quot;|*_[x](y)`" in rendered
    assert "<a href" not in rendered  # [x](y) is not a link
    # Every table kept its columns: the | in the values did not add cells.
    for table in re.findall(r"<table>.*?</table>", rendered, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, table


def test_fresh_plan(tmp_path: Path, browser: Chromium, capsys: pytest.CaptureFixture[str]) -> None:
    playbook = write_playbook(hostile(load_playbook(LAB_PLAYBOOK).playbook), tmp_path / "hostile.yml")
    page = open_in_browser(browser, report(playbook, tmp_path / "plan.html"), tmp_path / "plan.png")
    dom = page.dom
    assert dom["servers"] == SERVERS
    # Each server's PowerShell is exactly what `exmig plan --format ps1` prints for it.
    assert dom["powershell"] == plan_scripts(playbook, capsys)
    assert "-FriendlyName '<script>alert(\"fn\")</script>''&amp;\"|*_[x](y)`'" in dom["powershell"]["EX2010"]
    # The hostile values are text on the page; nothing of them became an element or an attribute.
    assert dom["friendly_name"] == HOSTILE_FRIENDLY_NAME
    assert HOSTILE_ORGANIZATION.replace('"', '""') in dom["subject"]
    assert HOSTILE_ORGANIZATION in dom["title"]
    assert (dom["scripts"], dom["images"], dom["handlers"]) == (0, 0, 0)
    assert "<script>alert" not in page.html and "<img src=x" not in page.html
    assert dom["status"].strip() == "Plan: planned, not run yet"
    assert all(rows == [] for rows in dom["steps"].values())
    assert dom["verify_note"] == "Not verified: no certificate has been issued yet, so there is nothing to verify."
    assert "not known yet: the servers are read when exmig run first connects" in dom["names_in_use"]
    # The DNS still to change is known from the playbook alone: the primary names to the 2010 source.
    assert "mail.mitserv.net" in dom["dns_changes"] and "EX2010" in dom["dns_changes"]

    capsys.readouterr()
    assert main(["report", str(playbook), "--format", "md"]) == 0
    md = capsys.readouterr().out
    _assert_inert_markdown(md)
    assert md.count("```powershell\n") == 2


def test_finished_lab_run(tmp_path: Path, browser: Chromium) -> None:
    lab = build_lab(tmp_path, mutate=hostile)
    try:
        _warn_in(lab, "EX2010", "Enable-ExchangeCertificate", "Microsoft.Exchange", HOSTILE_WARNING)
        proc, _ = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        journal = _journal(lab)
        out = report(lab.playbook_path, tmp_path / "run.html", "--timeout", "5")
        md = report(lab.playbook_path, tmp_path / "run.md", "--format", "md", "--no-verify").read_text()
    finally:
        lab.site.stop()
    page = open_in_browser(browser, out, tmp_path / "run.png")
    dom = page.dom
    assert dom["servers"] == SERVERS
    assert dom["status"].strip() == "Run: every step run so far is done"
    assert f"runs started {journal['runs'][0]['started']}" in page.html
    # What each step did and when, from the journal, in its order.
    for server in SERVERS:
        recorded = [r for r in journal["steps"].values() if r["server"] == server]
        assert [row[:4] for row in dom["steps"][server]] == [
            [r["step"], r["outcome"], r["started"], r["finished"]] for r in recorded]
        assert {row[1] for row in dom["steps"][server]} <= {"ok", "changed", "skipped"}
    assert dom["warnings"]["EX2010"] == [f"enable: EX2010: Enable-ExchangeCertificate: {HOSTILE_WARNING}"]
    # Thumbprints and the CSR in full.
    assert dom["issued_thumbprint"] == journal["issued_thumbprint"] and len(journal["issued_thumbprint"]) == 40
    # (HTML reads the CSR's CRLF line ends, as Exchange writes them, as LF.)
    assert dom["csr"] == journal["csr_pem"].replace("\r\n", "\n") and "CERTIFICATE REQUEST-----" in dom["csr"]
    assert len(dom["chain_rows"]) == len(journal["chain_pems"]) >= 1
    assert all(len(row) == 2 and re.fullmatch(r"[0-9A-F]{40}", row[1]) for row in dom["chain_rows"])
    # The verify matrix, asked of the lab: every TLS service of every name presents the issued certificate.
    tls = [row for row in dom["verify_rows"] if row[1] in ("https", "smtp", "imaps", "pop3s")]
    assert {(row[0], row[2]) for row in tls} == {("EX2010", "mail.mitserv.net"),
                                                ("EX2010", "autodiscover.mitserv.net"),
                                                ("EX2007", "legacy.mitserv.net")}
    assert all(row[3] == "ok" for row in dom["verify_rows"]), dom["verify_rows"]
    assert all(row[5] == journal["issued_thumbprint"] for row in tls)
    assert all(int(row[4]) > 30 for row in tls)
    assert (dom["scripts"], dom["images"], dom["handlers"]) == (0, 0, 0)
    assert LAB_DEFAULT_PASSWORD not in page.html and LAB_DEFAULT_PASSWORD not in md

    _assert_inert_markdown(md)
    assert journal["csr_pem"].replace("\r\n", "\n").strip() in md and journal["issued_thumbprint"] in md
    assert "Not verified: not asked for \\(--no-verify\\)" in md
    assert "&lt;script&gt;alert(&quot;warn&quot;)&lt;/script&gt; a certificate with [brackets] | takes" \
        in markdown_html(md)


def test_run_that_failed_on_one_server(tmp_path: Path, browser: Chromium) -> None:
    lab = build_lab(tmp_path, mutate=hostile)
    try:
        put_file_in_the_way(lab, "EX2007", "C:\\Certs")  # EX2007's chain and copy cannot write there
        proc, _ = lab.run_json("--no-verify")
        assert proc.returncode == 1, proc.stderr
        out = report(lab.playbook_path, tmp_path / "failed.html", "--timeout", "5")
    finally:
        lab.site.stop()
    page = open_in_browser(browser, out, tmp_path / "failed.png")
    dom = page.dom
    assert dom["servers"] == SERVERS
    assert dom["status"].strip().startswith("Run: failed on EX2007 (")
    failed = [row for row in dom["steps"]["EX2007"] if row[1] == "failed"]
    assert failed and "already exists" in failed[0][5]
    assert all(row[1] != "failed" for row in dom["steps"]["EX2010"])
    # The certificate went in on EX2010 only: verify says so, per server.
    tls = {(row[0], row[1], row[2]): row[3] for row in dom["verify_rows"]
           if row[1] in ("https", "smtp", "imaps", "pop3s")}
    assert tls[("EX2010", "https", "mail.mitserv.net")] == "ok"
    assert tls[("EX2007", "https", "legacy.mitserv.net")] == "wrong certificate"

    # The lab is gone: the record says the servers are unreachable, and says it promptly.
    start = time.monotonic()
    gone = report(lab.playbook_path, tmp_path / "gone.html", "--timeout", "2", "--verify-within", "20")
    assert time.monotonic() - start < 20
    dom = open_in_browser(browser, gone, tmp_path / "gone.png").dom
    assert dom["verify_rows"] and {row[3] for row in dom["verify_rows"]} == {"unreachable"}
    assert {row[0] for row in dom["verify_rows"]} == set(SERVERS)

    # A WinRM port that takes connections and never replies: the record is written after --verify-within.
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", lab.playbook.server("EX2010").connection.port or 0))
    silent.listen(8)  # the kernel completes the handshakes; nobody ever reads
    try:
        start = time.monotonic()
        out = report(lab.playbook_path, tmp_path / "silent.html", "--verify-within", "2", "--timeout", "1")
        assert time.monotonic() - start < 20
    finally:
        silent.close()
    dom = open_in_browser(browser, out, tmp_path / "silent.png").dom
    assert dom["verify_note"] == ("Not verified: the servers did not all answer within 2 s (--verify-within); "
                                  "run `exmig verify` to see which.")



def test_the_browser_check_sees_requests_console_errors_and_scripts(tmp_path: Path, browser: Chromium) -> None:
    """A control for the checks above: a page that does fetch, log and run gets caught by each of them."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><head><title>c</title></head><body><img src="missing.png">'
                    '<script>console.error("from the page")</script></body></html>', encoding="utf-8")
    visit = browser.visit(page)
    assert visit.loaded
    assert visit.other_requests == [(tmp_path / "missing.png").as_uri()]
    assert "error: from the page" in visit.errors
    with pytest.raises(AssertionError):
        open_in_browser(browser, page, tmp_path / "control.png")
