"""Injection over PSRP: hostile playbook values (quotes, $(), backticks, ;, unicode) reach the emulated
server's command handlers as inert parameter values, exactly as the playbook holds them.

The lab's registry is wrapped to record every bound call: what a handler received is what arrived.
(The rendered-text path, `exmig plan`, is covered in tests/plan/test_quoting.py.)
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator import checks
from orchestrator.connect import session_factory
from orchestrator.errors import ExmigError
from orchestrator.events import JsonEvents
from orchestrator.execute import Executor, RunOptions
from orchestrator.journal import load as load_journal
from orchestrator.lab.exchange import CA, EMS_2007_SNAPIN, EXCHANGE_CONFIGURATION, REQUEST
from orchestrator.lab.registry import CommandCall, CommandSpec, LabError, NativeResult, Registry, Session
from orchestrator.playbook import LoadedPlaybook, load_playbook
from orchestrator.secrets_store import SecretStore
from tests.e2e.conftest import write_playbook
from tests.reliability.harness import InProcessLab, LabTemplate

HOSTILE = ["'", "''", "\u2018", "\u2019", "\u201a", "\u201b", "\"", "$(calc)", "${env:PATH}", "`", "`n", ";", "|",
           "&", "@(1)", "#", "<#", "#>", " -Force", "$null", "%PATH%", "^", ",", "+", "=", "\\", "<", ">", "é",
           "\u00a0", "\U0001f512", "\u202e"]
RECORDED = ("New-ExchangeCertificate", "New-Item", "Set-Content", "Remove-Item")

# YAML itself reads NEL, LS and PS as line breaks (folded to a space when the playbook file is read),
# so those never reach exmig as written; C0/C1 controls are refused by the playbook (tested elsewhere).
YAML_LINE_BREAKS = "\x85\u2028\u2029"
hostile = st.lists(st.one_of(st.sampled_from(HOSTILE),
                             st.text(st.characters(blacklist_characters=YAML_LINE_BREAKS), min_size=1, max_size=4)),
                   min_size=1, max_size=6).map("".join)
# Windows folder names: the playbook refuses <>:"/\|?* and control characters.
folder = st.lists(st.one_of(st.sampled_from(["'", "\u2019", "$(x)", "`", ";", "&", "@", "#", "%", " ", "é", "{}",
                                             "[a]", "\U0001f512"]),
                            st.text(st.characters(blacklist_characters='<>:"/\\|?*', min_codepoint=32,
                                                  blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=3)),
                  min_size=1, max_size=5).map("".join)


def _visible(registry: Registry, name: str, session: Session) -> list[CommandSpec]:
    try:
        return [registry.command(name, session)]
    except LabError:  # not on this endpoint
        return []


class Recorder:
    """Wraps a lab registry's handlers: every call's bound parameters (and native argv) are kept."""

    def __init__(self, registry: Registry, version: int) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        if version == 2010:
            sessions = [Session(EXCHANGE_CONFIGURATION, "recorder"), Session("Microsoft.PowerShell", "recorder")]
        else:
            sessions = [Session("Microsoft.PowerShell", "recorder", snapins={EMS_2007_SNAPIN})]
        for name in RECORDED:
            specs = [spec for session in sessions for spec in _visible(registry, name, session)]
            assert specs, name
            registry.register(replace(specs[0], handler=self._wrap(specs[0].name, specs[0].handler)))
        native = registry.native("certutil.exe")
        assert native is not None
        inner = native.handler

        def certutil(args: list[str], session: Session) -> NativeResult:
            self.calls.append(("certutil.exe", {"argv": list(args)}))
            return inner(args, session)

        registry.register_native(replace(native, handler=certutil))

    def _wrap(self, name: str, handler: Any) -> Any:
        def recorded(call: CommandCall) -> None:
            self.calls.append((name, dict(call.params)))
            handler(call)

        return recorded

    def of(self, name: str) -> list[dict[str, Any]]:
        return [params for n, params in self.calls if n == name]


@pytest.fixture(scope="module")
def recorded_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessLab, dict[str, Recorder]]]:
    template = LabTemplate(tmp_path_factory.mktemp("injection"))
    lab = template.instantiate()
    recorders = {name: Recorder(e.winrm.registry, e.server.version) for name, e in lab.site.servers.items()}
    try:
        yield lab, recorders
    finally:
        lab.stop()


_serial = itertools.count(1)


def _paths(params: dict[str, Any]) -> list[str]:
    """-Path is a string[] parameter: the lab binds one value as a one-element list."""
    value = params["Path"]
    return list(value) if isinstance(value, list) else [value]


def _playbook(lab: InProcessLab, friendly: str, org: str, workdir: str) -> Path:
    """The lab playbook with these values, under a name of its own (pending requests stay apart)."""
    n = next(_serial)
    cn = f"inj{n}.mitserv.net"
    base = lab.loaded.playbook
    subject = base.certificate.subject.model_copy(update={"O": org, "CN": cn})
    certificate = base.certificate.model_copy(update={"subject": subject, "domains": [cn],
                                                      "friendly_name": friendly})
    servers = [s.model_copy(update={"workdir": workdir, "client_names": None}) for s in base.servers]
    return write_playbook(base.model_copy(update={"certificate": certificate, "servers": servers}),
                          lab.tmp / f"inj{n}.yml")


def _run_first_steps(lab: InProcessLab, loaded: LoadedPlaybook) -> None:
    """request, issue, install-chain on a fresh journal; the intermediate is taken out of the CA stores
    first, so install-chain writes, adds and removes its file again."""
    intermediate = checks.sha1_thumbprint(lab.site.ca.intermediate_cert)
    for emulated in lab.site.servers.values():
        with emulated.model.transaction() as model:
            if model.find(CA, intermediate) is not None:
                model.remove(CA, intermediate)
    journal = load_journal(loaded.path.with_suffix(".journal.json"), loaded.path)
    secrets = SecretStore(loaded.playbook, interactive=False)
    options = RunOptions(servers=["EX2010", "workstation", "EX2007"], steps=["request", "issue", "install-chain"])
    Executor(loaded, journal, session_factory(loaded, secrets), secrets, JsonEvents(io.StringIO()), options).run()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(friendly=hostile, org=hostile, leaf=folder)
def test_hostile_values_arrive_as_written(recorded_lab: tuple[InProcessLab, dict[str, Recorder]], friendly: str,
                                          org: str, leaf: str) -> None:
    lab, recorders = recorded_lab
    assume(len(friendly) < 64)
    for recorder in recorders.values():
        recorder.calls.clear()
    try:
        loaded = load_playbook(_playbook(lab, friendly, org, "C:\\" + leaf))
    except ExmigError:
        assume(False)  # a value the playbook refuses never reaches a server (tested below)
        raise
    _run_first_steps(lab, loaded)
    spec = loaded.playbook.certificate
    assert spec.friendly_name == friendly.strip() and spec.subject.O == org.strip()  # only trimmed
    workdir = loaded.playbook.source.workdir

    # New-ExchangeCertificate got the friendly name as one value, and the subject's O came out whole.
    (params,) = recorders["EX2010"].of("New-ExchangeCertificate")
    assert params.get("FriendlyName") == (spec.friendly_name or None)  # a blank name is trimmed to none
    model = lab.site.servers["EX2010"].model
    pending = [x509.load_der_x509_csr(e.csr_der) for e in model.entries(REQUEST) if e.csr_der is not None]
    (csr,) = [c for c in pending
              if [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [spec.subject.CN]]
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [spec.subject.O]
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [spec.subject.CN]

    # The working folder reached New-Item, Set-Content, certutil and Remove-Item as one path, on both servers.
    for name, recorder in recorders.items():
        assert [_paths(p) for p in recorder.of("New-Item")] == [[workdir]], name
        ((written,),) = [_paths(p) for p in recorder.of("Set-Content")]
        folder_prefix = workdir.rstrip("\\") + "\\"  # a blank folder name trims to the drive root, C:\\
        assert written.startswith(folder_prefix + "intermediate-") and written.endswith(".cer"), (name, written)
        assert [p["argv"] for p in recorder.of("certutil.exe")] == [["-addstore", "CA", written]], name
        assert [_paths(p) for p in recorder.of("Remove-Item")] == [[written]], name
        assert not lab.site.servers[name].model.fs.exists(written)


def test_a_value_with_a_newline_is_refused_before_any_server(recorded_lab: tuple[InProcessLab,
                                                                                    dict[str, Recorder]]) -> None:
    lab, recorders = recorded_lab
    for recorder in recorders.values():
        recorder.calls.clear()
    with pytest.raises(ExmigError, match="friendly_name: must not contain control characters"):
        load_playbook(_playbook(lab, "name\n; Remove-Item C:\\ -Recurse", "Org", "C:\\Certs"))
    assert all(r.calls == [] for r in recorders.values())


# Found by the injection test: quoting used RFC 4514 backslashes; Windows doubles a quote instead.
@pytest.mark.parametrize("org", ["Back\\slash", 'Say "hi"', "Smith, Jones", '"quoted"', "a=b"])
def test_x500_quoting_of_the_subject(recorded_lab: tuple[InProcessLab, dict[str, Recorder]], org: str) -> None:
    lab, _ = recorded_lab
    loaded = load_playbook(_playbook(lab, "quoting", org, "C:\\Certs"))
    _run_first_steps(lab, loaded)
    pending = [x509.load_der_x509_csr(e.csr_der) for e in lab.site.servers["EX2010"].model.entries(REQUEST)
               if e.csr_der is not None]
    cn = loaded.playbook.certificate.subject.CN
    (csr,) = [c for c in pending if [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [cn]]
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [org]
