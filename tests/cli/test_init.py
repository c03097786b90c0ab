"""`exmig init`: a starter playbook from flags (scripts) or questions (a terminal) that validates and rehearses."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from orchestrator.playbook import load_playbook
from orchestrator.schema import playbook_schema
from orchestrator.yamlsource import load_yaml
from tests.conftest import ROOT

FLAGS = ["--domain", "example.org", "--source", "EX2010=ex2010.example.org",
         "--target", "EX2007=ex2007.example.org", "--target", "EX2010B=ex2010b.example.org:2010"]


def _rehearse(exmig: Callable, path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    for name in [k for k in os.environ if k.startswith("EXMIG_")]:
        monkeypatch.delenv(name)
    result = exmig("rehearse", path, "--json")
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("issuer", ["manual", "lab"])
def test_init_with_flags_writes_a_playbook_that_validates_and_rehearses(
        tmp_path: Path, exmig: Callable, monkeypatch: pytest.MonkeyPatch, issuer: str) -> None:
    path = tmp_path / "example.yml"
    result = exmig("init", path, *FLAGS, "--issuer", issuer)
    assert result.code == 0, result.err
    assert result.err == "" and result.out.startswith(f"wrote {path}: ")  # nothing asked
    text = path.read_text()
    assert text.startswith("# exmig playbook for example.org")
    assert sum(line.lstrip().startswith("#") or " # " in line for line in text.splitlines()) >= 30  # commented
    # The editor hint is no modeline yet (yaml-language-server's isModeline: /^#\s+yaml-language-server\s*:/):
    # the schema file it names is not there until the admin writes it.
    assert "yaml-language-server: $schema=" in text and not re.search(r"(?m)^#\s+yaml-language-server\s*:", text)

    validated = exmig("validate", path)
    assert validated.code == 0, validated.err
    assert f"ok (3 servers: source EX2010, targets EX2007, EX2010B; issuer {issuer})" in validated.out
    assert list(jsonschema.Draft7Validator(playbook_schema()).iter_errors(load_yaml(path)[0])) == []
    p = load_playbook(path).playbook
    assert p.certificate.domains == ["mail.example.org", "autodiscover.example.org", "legacy.example.org"]
    assert p.certificate.subject.CN == "mail.example.org"
    assert [(s.name, s.version, s.role.value) for s in p.servers] == [
        ("EX2010", 2010, "source"), ("EX2007", 2007, "target"), ("EX2010B", 2010, "target")]

    events = _rehearse(exmig, path, monkeypatch)
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["counts"].get("failed", 0) == 0 and summary["counts"]["changed"] >= 10
    verdicts = {(e["server"], e["verdict"]) for e in events if e["event"] == "verify"}
    assert {server for server, _ in verdicts} == {"EX2010", "EX2007", "EX2010B"}
    assert {verdict for _, verdict in verdicts} == {"ok"}


def test_real_servers_get_their_hosts_kerberos_and_a_variable_per_password(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "mitserv.yml"
    assert exmig("init", path, *FLAGS).code == 0
    p = load_playbook(path).playbook
    assert p.issuer.type == "manual" and p.issuer.csr_file == "mitserv.csr"
    assert [s.connection.host for s in p.servers] == ["ex2010.example.org", "ex2007.example.org",
                                                      "ex2010b.example.org"]
    assert {s.auth for s in p.servers} == {"kerberos"}
    assert {s.credentials.username for s in p.servers} == {"administrator@EXAMPLE.ORG"}
    assert [s.credentials.password.env for s in p.servers] == [
        "EXMIG_EX2010_PASSWORD", "EXMIG_EX2007_PASSWORD", "EXMIG_EX2010B_PASSWORD"]


def test_a_files_issuer_validates_once_the_ca_answer_is_there(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "files.yml"
    result = exmig("init", path, *FLAGS, "--issuer", "files")
    assert result.code == 0 and "files-ca.zip" in result.out
    assert "issuer.bundle: file 'files-ca.zip' not found" in exmig("validate", path).err
    shutil.copy(ROOT / "tests" / "fixtures" / "issued" / "mitserv.zip", tmp_path / "files-ca.zip")
    assert exmig("validate", path).code == 0


def test_names_and_odd_values_come_back_as_written(tmp_path: Path, exmig: Callable) -> None:
    # A server called "true" and a host "10.0.0.5" must stay text (YAML would read true and numbers).
    path = tmp_path / "odd.yml"
    result = exmig("init", path, "--domain", "Example.ORG", "--name", "owa.example.org", "--name", "mail.example.org",
                   "--source", "true=10.0.0.5", "--target", "null=ex2007.example.org:2007")
    assert result.code == 0, result.err
    p = load_playbook(path).playbook
    assert p.certificate.domains == ["owa.example.org", "mail.example.org"]
    assert [(s.name, s.connection.host) for s in p.servers] == [("true", "10.0.0.5"), ("null", "ex2007.example.org")]


def test_it_never_overwrites(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "mine.yml"
    path.write_text("# my own playbook\n")
    result = exmig("init", path, *FLAGS)
    assert result.code == 2
    assert result.err == (f"exmig: error: {path}: exists; exmig init does not overwrite a file: give another PATH "
                          "or move it away\n")
    assert path.read_text() == "# my own playbook\n"
    link = tmp_path / "dangling.yml"
    link.symlink_to(tmp_path / "elsewhere.yml")
    assert exmig("init", link, *FLAGS).code == 2
    assert not (tmp_path / "elsewhere.yml").exists()


@pytest.mark.parametrize("args,expected", [
    (["--domain", "example.org"], "exmig init: give --source, --target (no terminal to ask on)"),
    ([*FLAGS[:4], "--target", "EX2007=ex2007.example.org:2013"],
     "--target EX2007=ex2007.example.org:2013: 2013 is not an Exchange version exmig handles; use 2007 or 2010"),
    (["--domain", "example.org", "--source", "EX2010=ex2010.example.org:2007", "--target", "EX2007=ex2007.x.org"],
     "--source EX2010: the source is the Exchange 2010 server"),
    (["--domain", "example.org", "--source", "EX2010=ex2010.example.org", "--target", "ex2010=ex2007.x.org"],
     "--target ex2010: the name is used twice"),
    (["--domain", "example_org", *FLAGS[2:]], "--domain example_org: 'example_org' is not a fully qualified"),
    (["--domain", "example.org", "--source", "EX2010=ex2010.example.org\n  evil: 1", *FLAGS[4:]],
     "is not a host name or address"),
    (["--domain", "example.org", "--source", "EX 2010=ex2010.example.org", *FLAGS[4:]],
     "'EX 2010' is not a server (NetBIOS) name"),
    (["--domain", "example.org", "--source", "ex2010.example.org", *FLAGS[4:]], "write NAME=HOST[:VERSION]"),
], ids=["no terminal", "version", "2007 source", "same name", "domain", "newline in host", "space in name",
        "no name"])
def test_bad_answers_are_named_by_their_flag_and_nothing_is_written(tmp_path: Path, exmig: Callable,
                                                                    args: list[str], expected: str) -> None:
    path = tmp_path / "x.yml"
    result = exmig("init", path, *args)
    assert result.code == 2
    assert result.err.startswith("exmig: error: ") and expected in result.err, result.err
    assert not path.exists()


def _converse(args: list[str], answers: list[tuple[str, str]], cwd: Path, timeout: float = 30) -> tuple[int, str]:
    """Run exmig on a terminal (a pty): wait for each prompt, type the answer; bounded in time."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "PYTHONPATH": str(ROOT)}, close_fds=True)
    os.close(slave)
    seen, mark, deadline = "", 0, time.monotonic() + timeout
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and pending[0][0] in seen[mark:]:  # the prompt, shown after the last answer
                os.write(master, (pending.pop(0)[1] + "\n").encode())
                mark = len(seen)
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_on_a_terminal_it_asks_offering_the_usual_names(tmp_path: Path) -> None:
    code, transcript = _converse(["init", "asked.yml"], [
        ("Mail domain", "mitserv.net"),
        ("Names on the certificate", ""),  # the offer: mail., autodiscover., legacy.
        ("source", "EX2010=ex2010.mitserv.net"),
        ("targets", "EX2007=ex2007.mitserv.net:2007, EX2010B=ex2010b.mitserv.net:2010"),
        ("Issuer", "files"),
    ], tmp_path)
    assert code == 0, transcript
    assert "[mail.mitserv.net, autodiscover.mitserv.net, legacy.mitserv.net]" in transcript
    data, _ = load_yaml(tmp_path / "asked.yml")
    assert data["certificate"]["domains"] == ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"]
    assert [(s["name"], s["version"]) for s in data["servers"]] == [("EX2010", 2010), ("EX2007", 2007),
                                                                    ("EX2010B", 2010)]
    assert data["issuer"] == {"type": "files", "bundle": "asked-ca.zip"}


def test_on_a_terminal_a_bad_answer_is_asked_again(tmp_path: Path) -> None:
    code, transcript = _converse(["init", "again.yml", "--source", "EX2010=ex2010.example.org"], [
        ("Mail domain", "mail_example.org"),
        ("Mail domain", "example.org"),
        ("Names on the certificate", "mail.example.org"),
        ("targets", ""),
        ("Issuer", "lab"),
    ], tmp_path)
    assert code == 0, transcript
    assert "'mail_example.org' is not a valid host name" in transcript
    assert load_playbook(tmp_path / "again.yml").playbook.issuer.type == "lab"
