"""Hostile and broken input: each ends with one line on stderr, a non-zero exit, and no server changed
(the emulated servers' stores, services and files are compared before and after)."""

from __future__ import annotations

import datetime as dt
import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from ruamel.yaml import YAML

from orchestrator.connect import session_factory
from orchestrator.events import JsonEvents
from orchestrator.execute import Executor, RunOptions
from orchestrator.journal import load as load_journal
from orchestrator.lab.ca import LabCA
from orchestrator.lab.exchange.winfs import normalize
from orchestrator.playbook import Playbook
from orchestrator.secrets_store import SecretStore
from tests.conftest import CliResult
from tests.reliability.harness import InProcessLab, LabTemplate

Cli = Callable[..., CliResult]
SOURCE, TARGET = "EX2010", "EX2007"


@pytest.fixture
def lab(lab_template: LabTemplate, tmp_path: Path) -> Iterator[InProcessLab]:
    lab = lab_template.instantiate(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.stop()


def _yaml(path: Path) -> dict[str, Any]:
    return dict(YAML(typ="safe").load(path.read_text()))


def _write(path: Path, data: dict[str, Any]) -> Path:
    yaml = YAML()
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


def edited(lab: InProcessLab, change: Callable[[dict[str, Any]], None], name: str = "edited.yml") -> Path:
    data = _yaml(lab.loaded.path)
    change(data)
    return _write(lab.tmp / name, data)


def server_entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["servers"] if s["name"] == name)


def refused(result: CliResult, code: int, *fragments: str) -> str:
    """One line, `exmig: error: ...`, the expected exit code and the expected words."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("exmig: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.code == code, (result.code, lines[0])
    return lines[0]


def run(exmig: Cli, playbook: Path, *args: str) -> CliResult:
    return exmig("run", str(playbook), "--yes", "--no-verify", *args)


# -- the playbook itself ----------------------------------------------------------------------------


def test_malformed_yaml(lab: InProcessLab, exmig: Cli) -> None:
    before = lab.state()
    bad = lab.tmp / "bad.yml"
    bad.write_text(lab.loaded.path.read_text().replace("key_size: 2048", "key_size: [2048\n  oops: {"))
    refused(run(exmig, bad), 2, "bad.yml:", "not valid YAML")
    assert lab.state() == before


@pytest.mark.parametrize(("field", "value", "expected"), [
    (("certificate", "key_size"), "big", "certificate.key_size"),
    (("certificate", "private_key_exportable"), "yes please", "certificate.private_key_exportable"),
    (("certificate", "services"), "IIS", "certificate.services"),
    (("retry", "attempts"), 0, "retry.attempts"),
    (("retry", "read_timeout"), 1, "retry.read_timeout"),
])
def test_wrong_types(lab: InProcessLab, exmig: Cli, field: tuple[str, str], value: Any, expected: str) -> None:
    before = lab.state()

    def change(data: dict[str, Any]) -> None:
        data.setdefault(field[0], {})[field[1]] = value

    refused(run(exmig, edited(lab, change)), 2, "edited.yml:", expected)
    assert lab.state() == before


def test_wrong_server_version_type(lab: InProcessLab, exmig: Cli) -> None:
    before = lab.state()
    line = refused(run(exmig, edited(lab, lambda d: server_entry(d, TARGET).update(version="2007"))), 2)
    assert "servers[1].version" in line
    assert lab.state() == before


@pytest.mark.parametrize(("where", "expected"), [
    ("certificate", "certificate.colour: unknown key"),
    ("servers", "servers[0].colour: unknown key"),
    ("connection", "servers[0].connection.colour: unknown key"),
])
def test_unknown_keys(lab: InProcessLab, exmig: Cli, where: str, expected: str) -> None:
    before = lab.state()

    def change(data: dict[str, Any]) -> None:
        target = {"certificate": data["certificate"], "servers": data["servers"][0],
                  "connection": data["servers"][0]["connection"]}[where]
        target["colour"] = "blue"

    refused(run(exmig, edited(lab, change)), 2, expected)
    assert lab.state() == before


@pytest.mark.parametrize("domain", ["legacy..mitserv.net", "-legacy.mitserv.net", "legacy", "mail.mitserv.net/x",
                                    "l\u0435gacy.mitserv.net", "legacy.mitserv.net; Remove-Item C:\\"])
def test_bad_domains(lab: InProcessLab, exmig: Cli, domain: str) -> None:
    before = lab.state()

    def change(data: dict[str, Any]) -> None:
        data["certificate"]["domains"][2] = domain

    refused(run(exmig, edited(lab, change)), 2, "certificate.domains[2]")
    assert lab.state() == before


# -- the CA's answer ---------------------------------------------------------------------------------


@pytest.fixture
def waiting(lab: InProcessLab, exmig: Cli) -> tuple[InProcessLab, Path, bytes]:
    """A manual-issuer run that made the request and stopped for the CA: (lab, playbook, CSR)."""
    def change(data: dict[str, Any]) -> None:
        data["issuer"] = {"type": "manual", "csr_file": "request.csr"}
        for server in data["servers"]:
            server["credentials"]["password"] = {"env": "EXMIG_LAB_PASSWORD"}

    playbook = edited(lab, change, "manual.yml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXMIG_LAB_PASSWORD", lab.site.servers[SOURCE].password)
        first = run(exmig, playbook)
    assert first.code == 3, first.err
    return lab, playbook, (lab.tmp / "request.csr").read_bytes()


def _ca(lab: InProcessLab) -> LabCA:
    return LabCA.load_or_create(lab.site.state_dir / "ca")


def _answer(lab: InProcessLab, leaf: x509.Certificate) -> list[str]:
    leaf_file = lab.tmp / "answer.crt"
    chain_file = lab.tmp / "intermediate.crt"
    leaf_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(_ca(lab).intermediate_pem)
    return ["--certificate", str(leaf_file), "--chain", str(chain_file)]


def _other_csr() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"]
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(("case", "expected"), [
    ("another request", "is not for this request"),
    ("expired", "expired on"),
    ("not yet valid", "is not valid before"),
])
def test_a_ca_answer_that_does_not_fit(waiting: tuple[InProcessLab, Path, bytes], exmig: Cli, monkeypatch:
                                       pytest.MonkeyPatch, case: str, expected: str) -> None:
    lab, playbook, csr = waiting
    before = lab.state()
    ca = _ca(lab)
    leaf = {
        "another request": lambda: ca.sign_csr(_other_csr()),
        "expired": lambda: ca.sign_csr(csr, not_before=NOW - dt.timedelta(days=400), days=30),
        "not yet valid": lambda: ca.sign_csr(csr, not_before=NOW + dt.timedelta(days=30)),
    }[case]()
    monkeypatch.setenv("EXMIG_LAB_PASSWORD", lab.site.servers[SOURCE].password)
    refused(run(exmig, playbook, *_answer(lab, leaf)), 2, expected)
    assert lab.state() == before


def test_a_leaf_missing_a_name(waiting: tuple[InProcessLab, Path, bytes], exmig: Cli,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The request was made for three names; the admin added a fourth to the playbook before the CA
    # answered. The CA's certificate (for the request as made) lacks it: refused, nothing imported.
    lab, playbook, csr = waiting
    before = lab.state()
    data = _yaml(playbook)
    data["certificate"]["domains"].append("owa.mitserv.net")
    _write(playbook, data)
    monkeypatch.setenv("EXMIG_LAB_PASSWORD", lab.site.servers[SOURCE].password)
    refused(run(exmig, playbook, *_answer(lab, _ca(lab).sign_csr(csr))), 2, "does not cover owa.mitserv.net")
    assert lab.state() == before


# -- credentials, hosts, TLS, versions ---------------------------------------------------------------


def test_wrong_password_for_the_source(lab: InProcessLab, exmig: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    before = lab.state()
    monkeypatch.setenv("EXMIG_LAB_PASSWORD", "not-the-password")
    line = refused(run(exmig, lab.loaded.path), 1, "EX2010", "authentication failed")
    assert "not-the-password" not in line
    assert lab.state() == before


def test_wrong_password_for_a_target_changes_nothing_on_the_source(lab: InProcessLab, exmig: Cli,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The pre-flight read of every server comes before the first change: the source gets no request.
    before = lab.state()
    playbook = edited(lab, lambda d: server_entry(d, TARGET)["credentials"].update(
        password={"env": "EXMIG_TARGET_PASSWORD"}))
    monkeypatch.setenv("EXMIG_TARGET_PASSWORD", "wrong-for-ex2007")
    line = refused(run(exmig, playbook), 1, "EX2007", "authentication failed")
    assert "wrong-for-ex2007" not in line
    assert lab.state() == before


def _fast_retry(data: dict[str, Any]) -> None:
    data["retry"] = {"attempts": 2, "max_seconds": 20, "initial_backoff": 0.05, "max_backoff": 0.1,
                     "operation_timeout": 1, "read_timeout": 2}


def test_a_host_that_refuses_connections(lab: InProcessLab, exmig: Cli) -> None:
    before = lab.state()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    def change(data: dict[str, Any]) -> None:
        _fast_retry(data)
        server_entry(data, TARGET)["connection"]["port"] = closed_port

    refused(run(exmig, edited(lab, change)), 1, "EX2007", "connection failed")
    assert lab.state() == before


def test_a_host_that_accepts_but_never_answers(lab: InProcessLab, exmig: Cli) -> None:
    before = lab.state()
    with socket.socket() as silent:  # listens, never accepts: the request goes nowhere
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)

        def change(data: dict[str, Any]) -> None:
            _fast_retry(data)
            server_entry(data, TARGET)["connection"]["port"] = silent.getsockname()[1]

        refused(run(exmig, edited(lab, change)), 1, "EX2007", "timed out")
    assert lab.state() == before


@pytest.fixture(scope="module")
def https_template(tmp_path_factory: pytest.TempPathFactory) -> LabTemplate:
    def https(playbook: Playbook) -> Playbook:
        servers = [s.model_copy(update={"connection": s.connection.model_copy(update={"scheme": "https"})})
                   for s in playbook.servers]
        return playbook.model_copy(update={"servers": servers})

    return LabTemplate(tmp_path_factory.mktemp("https"), mutate=https)


@pytest.mark.parametrize("ca_file", ["system roots", "another CA"])
def test_a_server_certificate_that_fails_validation(https_template: LabTemplate, tmp_path: Path, exmig: Cli,
                                                   ca_file: str) -> None:
    lab = https_template.instantiate(tmp_path / "lab")
    try:
        before = lab.state()
        other = LabCA.load_or_create(tmp_path / "other-ca").write_ca_file(tmp_path / "other-ca.pem")

        def change(data: dict[str, Any]) -> None:
            for server in data["servers"]:
                if ca_file == "system roots":
                    server["connection"].pop("ca_file", None)
                else:
                    server["connection"]["ca_file"] = str(other)

        refused(run(exmig, edited(lab, change)), 1, "TLS certificate validation failed")
        assert lab.state() == before
    finally:
        lab.stop()


def test_the_https_lab_itself_works(https_template: LabTemplate, tmp_path: Path) -> None:
    # The control for the test above: with the right CA file the same lab migrates.
    lab = https_template.instantiate(tmp_path / "lab")
    try:
        assert lab.run().error is None
    finally:
        lab.stop()


@pytest.mark.parametrize("syntax", ["Exchange 2010 endpoint", "declared 2010"])
def test_a_2007_target_given_2010_syntax(lab: InProcessLab, exmig: Cli, syntax: str) -> None:
    before = lab.state()

    def change(data: dict[str, Any]) -> None:
        target = server_entry(data, TARGET)
        if syntax == "Exchange 2010 endpoint":  # 2010's remoting endpoint on a 2007 server
            target["connection"].update(path="/PowerShell", configuration="Microsoft.Exchange")
        else:  # the 2007 server declared as 2010: -Server and -FileData, no snap-in
            target["version"] = 2010
            target["connection"].update(path="/wsman", configuration="Microsoft.PowerShell",
                                        system_port=target["connection"]["port"])

    result = run(exmig, edited(lab, change))
    if syntax == "Exchange 2010 endpoint":  # refused when the playbook loads, before any connection
        refused(result, 2, "servers[1]", "Microsoft.Exchange does not exist on Exchange 2007")
    else:
        refused(result, 1, "EX2007", "Get-ExchangeCertificate")
    assert lab.state() == before


# -- a PFX whose password is not this run's ----------------------------------------------------------


def _foreign_pfx() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.mitserv.net")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(b"x", key, cert, None,
                                                serialization.BestAvailableEncryption(b"another-password"))


class _SwapBeforeImport(JsonEvents):
    """Between copy and import, the PFX on the 2007 server is replaced by one with another password
    (someone else's file): Import-ExchangeCertificate answers that the password is wrong."""

    def __init__(self, lab: InProcessLab) -> None:
        super().__init__(io.StringIO())
        self.lab = lab
        self.target_before: dict[str, Any] | None = None

    def step_started(self, server: str, step: str) -> None:
        if (server, step) == (TARGET, "import"):
            self.target_before = self.lab.state()[TARGET]
            model = self.lab.site.servers[TARGET].model
            with model.transaction():
                model.fs.write(normalize("C:\\Certs\\mail.mitserv.net.pfx"), _foreign_pfx())
        super().step_started(server, step)


def test_a_pfx_password_that_is_wrong(lab: InProcessLab) -> None:
    secrets = SecretStore(lab.loaded.playbook, interactive=False)
    events = _SwapBeforeImport(lab)
    executor = Executor(lab.loaded, load_journal(lab.journal_path, lab.loaded.path),
                        session_factory(lab.loaded, secrets), secrets, events, RunOptions())
    with pytest.raises(Exception) as caught:
        executor.run()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    # The real inner text (issue 16) and exmig's fix for it, on the one line.
    assert ("EX2007: Import-ExchangeCertificate: The source data cannot be imported or the wrong password was "
            "specified; the PFX password does not open this PFX") in message
    assert int(getattr(caught.value, "exit_code", 0)) == 1
    after = lab.state()[TARGET]
    assert events.target_before is not None
    # Nothing imported; and the private key in the PFX is not left on the target's disk.
    assert after["my"] == events.target_before["my"]
    assert after["files"] == []
