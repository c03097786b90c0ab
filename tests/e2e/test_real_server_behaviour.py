"""`exmig rehearse` against labs that behave as real servers do where they differ from the lab's default
(issue 16): the CA's root not trusted, RawData-only objects, no Services, no revocation list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.lab.exchange import ExchangeServerModel, ServerInspector
from tests.conftest import ROOT


def rehearse(playbook: Path | str, *options: str, keep: Path | None = None) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    args = [sys.executable, "-m", "orchestrator", "rehearse", str(playbook), "--json", *options]
    if keep is not None:
        args += ["--keep", str(keep)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def lab_playbook(tmp_path: Path, install_root: bool) -> Path:
    text = (ROOT / "playbooks" / "lab.yml").read_text()
    if install_root:
        text = text.replace("  type: lab ", "  install_root: true\n  type: lab ", 1)
        assert "install_root: true" in text
    path = tmp_path / "lab.yml"
    path.write_text(text)
    return path


def test_untrusted_root_stops_before_any_change(tmp_path: Path) -> None:
    keep = tmp_path / "lab"
    code, events, stderr = rehearse("playbooks/lab.yml", "--untrusted-root", keep=keep)
    assert code == 1
    [line] = [x for x in stderr.splitlines() if x.startswith("exmig: error:")]
    assert line.startswith("exmig: error: EX2010, EX2007: the CA's root 'CN=exmig Lab Root Certificate Authority")
    assert "is not in LocalMachine\\Root" in line and "issuer.install_root: true" in line
    # Nothing was sent that changes a server: only reads, and no request on the source.
    commands = [e for e in events if e["event"] == "command"]
    # (The reads include the names in use, issue 17: every Get- cmdlet reads.)
    assert commands and all(part.startswith("Get-") or part == "Add-PSSnapin"
                            for e in commands for part in e["command"].split(" + "))
    for name, version in (("EX2010", "2010"), ("EX2007", "2007")):
        model = ExchangeServerModel.load_or_create(keep / name, name=name, version=version, fqdn="x")
        view = ServerInspector(model)
        assert view.thumbprints("REQUEST") == [] and len(view.thumbprints("My")) == 1


def test_install_root_completes_and_verifies(tmp_path: Path) -> None:
    code, events, stderr = rehearse(lab_playbook(tmp_path, install_root=True), "--untrusted-root")
    assert code == 0, stderr
    chain = [e for e in events if e["event"] == "step" and e.get("step") == "install-chain"
             and e.get("outcome") == "changed"]
    assert {e["server"] for e in chain} == {"EX2010", "EX2007"}
    # (a pipeline's command event names its commands: "New-Item + Set-Content + certutil.exe + ...")
    certutil = [e for e in events if e["event"] == "command" and "certutil.exe" in e["command"].split(" + ")]
    assert certutil
    verdicts = [e["verdict"] for e in events if e["event"] == "verify"]
    assert verdicts and set(verdicts) == {"ok"}


def test_install_root_is_shown_in_the_plan(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(lab_playbook(tmp_path, True))],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Before the lab CA exists (the plan does not create it) the root is a placeholder naming where it comes from.
    adds = [i for i, line in enumerate(lines) if "certutil.exe -addstore Root 'C:\\Certs\\root.cer'" in line]
    assert len(adds) == 2  # the source and the 2007 target, each before its CA store's certutil
    assert all("<the CA's root certificate (issuer.root: FILE)>" in lines[i - 1] for i in adds)
    assert not (tmp_path / ".exmig").exists()


def test_revocation_offline_completes_with_a_warning_in_run_and_verify() -> None:
    code, events, stderr = rehearse("playbooks/lab.yml", "--revocation-offline")
    assert code == 0, stderr
    notes = [e["text"] for e in events if e["event"] == "note"]
    assert {n.split(":")[0] for n in notes if "RevocationCheckFailure" in n} == {"EX2010", "EX2007"}
    verify_steps = [e for e in events if e["event"] == "step" and e.get("step") == "verify" and e.get("phase") == "end"]
    assert verify_steps and all(e["outcome"] == "ok" and "revocation list" in e["reason"] for e in verify_steps)
    findings = [e for e in events if e["event"] == "verify" and e["service"] == "certificate"]
    assert {f["verdict"] for f in findings} == {"revocation_unchecked"}
    assert all("CRL" in f["detail"] for f in findings)
    others = {e["verdict"] for e in events if e["event"] == "verify" and e["service"] != "certificate"}
    assert others == {"ok"}


def test_rawdata_only_objects_migrate_and_verify() -> None:
    code, events, stderr = rehearse("playbooks/lab.yml", "--rawdata-only")
    assert code == 0, stderr
    steps = {(e["server"], e["step"]): e for e in events if e["event"] == "step" and e.get("phase") == "end"}
    assert all(e["outcome"] in ("ok", "changed") for e in steps.values())
    # Facts computed from RawData: the status and services are not there to report, and exmig says so.
    assert "status not reported, services not reported" in steps[("EX2007", "verify")]["reason"]
    tls = {e["verdict"] for e in events if e["event"] == "verify" and e["service"] in ("https", "smtp", "imaps",
                                                                                       "pop3s")}
    assert tls == {"ok"}


def test_objects_without_services_migrate_and_verify() -> None:
    code, events, stderr = rehearse("playbooks/lab.yml", "--no-services")
    assert code == 0, stderr
    steps = {(e["server"], e["step"]): e for e in events if e["event"] == "step" and e.get("phase") == "end"}
    assert "status Valid, services not reported" in steps[("EX2010", "verify")]["reason"]
    services = {e["verdict"] for e in events if e["event"] == "verify" and e["service"] in ("IIS", "SMTP")}
    assert services == {"not_reported"}
    tls = {e["verdict"] for e in events if e["event"] == "verify" and e["service"] == "https"}
    assert tls == {"ok"}


def test_smtp_shown_is_not_taken_for_the_default_smtp_certificate(tmp_path: Path) -> None:
    """An admin enabled IIS, POP and IMAP by hand: Services then shows SMTP too (computed view), yet the server's
    default SMTP certificate is the old one. exmig still sends Enable, and SMTP moves."""
    from tests.e2e.conftest import build_lab, raw_invoke, raw_pool

    lab = build_lab(tmp_path)
    try:
        first, _ = lab.run_json("--step", "request", "--step", "issue", "--step", "install-chain", "--step",
                                "complete")
        assert first.returncode == 0, first.stderr
        source = lab.server("EX2010")
        [ours] = [t for t in source.inspector.thumbprints("My") if t != source.inspector.serving()["smtp"]]
        with raw_pool(source, "Microsoft.Exchange") as ems:
            raw_invoke(ems, "Enable-ExchangeCertificate", Thumbprint=ours, Services="IIS,POP,IMAP", Server="EX2010")
        assert source.inspector.services()[ours] == "IMAP, POP, IIS, SMTP"
        assert source.inspector.serving()["smtp"] != ours
        proc, events = lab.run_json("--server", "EX2010", "--step", "enable")
        assert proc.returncode == 0, proc.stderr
        [enable] = [e for e in events if e["event"] == "step" and e.get("phase") == "end"]
        assert enable["outcome"] == "changed"
        assert source.inspector.serving()["smtp"] == ours
    finally:
        lab.site.stop()


def test_lab_serve_takes_the_switches(tmp_path: Path) -> None:
    """`exmig lab serve --untrusted-root --rawdata-only`: the emulated servers' \\Root lacks the lab CA's root,
    and their certificate objects carry RawData only, as an admin's own pypsrp script sees them."""
    import signal

    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    from tests.e2e.test_lab_serve import lab_playbook_on_free_ports, pool_for

    playbook = lab_playbook_on_free_ports(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "lab", "serve", str(playbook), "--state",
                             str(tmp_path / "state"), "--json", "--untrusted-root", "--rawdata-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        endpoint = json.loads(proc.stdout.readline())
        assert endpoint["name"] == "EX2010"
        with pool_for(endpoint) as ems:
            ps = PowerShell(ems)
            ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", "EX2010")
            [cert] = ps.invoke()
        assert set(cert.adapted_properties) == {"RawData"}
        port = int(endpoint["wsman_url"].split(":")[2].split("/")[0])
        wsman = WSMan("127.0.0.1", port=port, path="wsman", ssl=False, auth="ntlm", username=endpoint["username"],
                      password=endpoint["password"], encryption="always")
        with RunspacePool(wsman) as system:
            ps = PowerShell(system)
            ps.add_cmdlet("Get-ChildItem").add_parameter("Path", "Cert:\\LocalMachine\\Root")
            roots = [str(r.adapted_properties["Subject"]) for r in ps.invoke()]
        assert roots == ["CN=EX2010"]  # the setup certificate only; no lab CA root
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_manual_issuer_stops_before_the_first_import_then_installs_the_named_root(tmp_path: Path) -> None:
    """The CA's answer is unknown when the request is made; exmig checks \\Root once it has the answer, before
    install-chain changes anything. With issuer.install_root and issuer.root naming the root's file, it goes on."""
    from orchestrator.playbook import LAB_DEFAULT_PASSWORD, ManualIssuer, SecretRef
    from tests.e2e.conftest import build_lab, ca_store, write_playbook

    lab = build_lab(tmp_path, install_third_party_roots=False)
    try:
        password = SecretRef(env="EX_LAB_PASSWORD")
        servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={"password": password})})
                   for s in lab.playbook.servers]
        manual = lab.playbook.model_copy(update={"issuer": ManualIssuer(type="manual", csr_file="x.csr"),
                                                 "servers": servers})
        write_playbook(manual, lab.playbook_path)
        env = {"EX_LAB_PASSWORD": LAB_DEFAULT_PASSWORD}
        assert lab.exmig("run", str(lab.playbook_path), "--yes", env_extra=env).returncode == 3
        signed = lab.exmig("lab", "sign", str(tmp_path / "x.csr"), "--out", str(tmp_path / "answer"),
                           "--ca", str(lab.site.state_dir / "ca"))
        assert signed.returncode == 0, signed.stderr
        answer = next((tmp_path / "answer").glob("*.zip"))
        before = {name: ca_store(lab, name) for name in ("EX2010", "EX2007")}

        stopped = lab.exmig("run", str(lab.playbook_path), "--yes", "--certificate", str(answer), env_extra=env)
        assert stopped.returncode == 1
        [line] = stopped.stderr.strip().splitlines()
        assert "EX2010, EX2007: the CA's root 'CN=exmig Lab Root Certificate Authority" in line
        assert {name: ca_store(lab, name) for name in ("EX2010", "EX2007")} == before
        assert len(lab.server("EX2010").inspector.thumbprints("REQUEST")) == 1  # still pending, nothing imported

        write_playbook(manual.model_copy(update={"issuer": ManualIssuer(
            type="manual", csr_file="x.csr", install_root=True, root=str(lab.site.ca_file))}), lab.playbook_path)
        done = lab.exmig("run", str(lab.playbook_path), "--yes", "--no-verify", "--certificate", str(answer),
                         env_extra=env)
        assert done.returncode == 0, done.stderr + done.stdout
        thumb = signed.stdout.split()[1]
        for name in ("EX2010", "EX2007"):
            view = lab.server(name).inspector
            cert = view.certificate(thumb)
            # The root went in with certutil -addstore Root: a registry root, and the certificate is Valid.
            assert cert is not None and (cert.status, cert.root_ca_type) == ("Valid", "Registry"), (name, cert)
            assert view.serving()["https"] == thumb
    finally:
        lab.site.stop()


def test_verify_names_the_cause_of_an_untrusted_status(tmp_path: Path) -> None:
    """After the migration someone removes the CA's root from a server's \\Root: the status a real server then
    reports (Untrusted) reaches the admin with its cause and fix."""
    from orchestrator.certs import thumbprint
    from tests.e2e.conftest import build_lab

    lab = build_lab(tmp_path)
    try:
        proc, _ = lab.run_json("--no-verify")
        assert proc.returncode == 0, proc.stderr
        lab.server("EX2007").model.remove("Root", thumbprint(lab.site.ca.root_cert))
        checked = lab.exmig("verify", str(lab.playbook_path), "--json", "--ca-file", str(lab.site.ca_file))
        assert checked.returncode == 4
        findings = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
        [bad] = [f for f in findings if f["server"] == "EX2007" and f["service"] == "certificate"]
        assert "status Untrusted: the server does not trust the CA's root" in bad["detail"]
        assert "issuer.install_root: true" in bad["detail"]
        assert {f["verdict"] for f in findings if f["server"] == "EX2010"} == {"ok"}
    finally:
        lab.site.stop()
