"""`exmig init`: a commented starter playbook from a few answers (the mail domain, the names, the servers,
the issuer), the way playbooks/mitserv.yml is written.

The answers are checked here with the playbook's own rules (check_hostname, the server-name pattern), so a bad
answer is named by its flag; the text is then read back by the loader before it is written, so what init
writes always validates.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from orchestrator.errors import UsageError
from orchestrator.playbook import _SERVER_NAME, Connection, check_hostname, has_control, parse_playbook
from orchestrator.yamlsource import load_yaml

ISSUERS = ("manual", "files", "lab")
T = TypeVar("T")
# Scalars YAML reads as text when written plainly (in 1.2, and in 1.1 for its yes/no); anything else is
# quoted: a host "1.5" or a name "true" or "null" would otherwise come back as a number, a boolean or nothing.
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9._@\-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


@dataclass(frozen=True)
class ServerAnswer:
    name: str
    host: str
    version: int


@dataclass(frozen=True)
class Answers:
    domain: str
    names: list[str]
    source: ServerAnswer
    targets: list[ServerAnswer]
    issuer: str


def default_names(domain: str) -> list[str]:
    """The seed's three names: mail. and autodiscover. (moving to 2010), legacy. (2007 during coexistence)."""
    return [f"mail.{domain}", f"autodiscover.{domain}", f"legacy.{domain}"]


def _where(option: str, value: str) -> str:
    """The error's prefix: the flag and its value, or nothing when the answer was typed at a prompt."""
    return f"{option} {value}: " if option else ""


def parse_domain(value: str, option: str = "--domain") -> str:
    try:
        return check_hostname(value)
    except ValueError as exc:
        raise UsageError(f"{_where(option, value)}{exc}") from None


def parse_names(values: list[str], option: str = "--name") -> list[str]:
    names: list[str] = []
    for value in values:
        try:
            name = check_hostname(value)
        except ValueError as exc:
            raise UsageError(f"{_where(option, value)}{exc}") from None
        if name in names:
            raise UsageError(f"{_where(option, value)}'{name}' is listed twice")
        names.append(name)
    if not names:
        raise UsageError(f"{option or 'names'}: give at least one name for the certificate")
    return names


def parse_server(option: str, value: str, default_version: int) -> ServerAnswer:
    """`NAME=HOST[:VERSION]`, e.g. EX2007=ex2007.example.org:2007."""
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"{_where(option, value)}write NAME=HOST[:VERSION], e.g. "
                         f"{option + ' ' if option else ''}EX2007=ex2007.example.org:2007")
    host, version = rest, default_version
    head, colon, tail = rest.rpartition(":")
    if colon and tail.isdigit():
        host, version = head, int(tail)
        if version not in (2007, 2010):
            raise UsageError(f"{_where(option, value)}{version} is not an Exchange version exmig handles; "
                             "use 2007 or 2010")
    if not _SERVER_NAME.fullmatch(name):
        raise UsageError(f"{_where(option, value)}'{name}' is not a server (NetBIOS) name: letters, digits and '-', "
                         "up to 63 characters")
    try:
        Connection(host=host)  # the loader's host rule
    except ValidationError:
        raise UsageError(f"{_where(option, value)}'{host}' is not a host name or address") from None
    return ServerAnswer(name, host, version)


def check_answers(answers: Answers) -> None:
    if answers.source.version != 2010:
        raise UsageError(f"--source {answers.source.name}: the source is the Exchange 2010 server the request is "
                         "made on; give it without :2007")
    if not answers.targets:
        raise UsageError("--target: give at least one server to move the certificate to")
    seen: set[str] = set()
    for option, server in [("--source", answers.source), *(("--target", t) for t in answers.targets)]:
        if server.name.lower() in seen:
            raise UsageError(f"{option} {server.name}: the name is used twice; every server needs its own")
        seen.add(server.name.lower())
    if answers.issuer not in ISSUERS:
        raise UsageError(f"--issuer {answers.issuer}: use one of {', '.join(ISSUERS)}")


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _lab_fqdn(server: ServerAnswer) -> str:
    from orchestrator.lab.site import lab_fqdn

    return lab_fqdn(server.name, "127.0.0.1")


def _scalar(value: str) -> str:
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a YAML 1.2 double-quoted scalar


def _env_name(server: str) -> str:
    return "EXMIG_" + re.sub(r"[^A-Za-z0-9]", "_", server).upper() + "_PASSWORD"


def _noted(text: str, note: str) -> str:
    """A line with its comment, the comments in one column where the line leaves room."""
    return f"{text:<32} # {note}" if len(text) < 32 else f"{text}  # {note}"


# --issuer lab: ports as in playbooks/lab.yml (the lab listens on 127.0.0.1, both 2010 endpoints on one port).
_LAB_PORT, _LAB_TLS = 15985, {"https": 14431, "smtp": 12525, "imaps": 19931, "pop3s": 19951}


def render(answers: Answers, path: Path) -> str:
    """The playbook's text: every value with a comment saying what it is and what else it can be."""
    a = answers
    lab = a.issuer == "lab"
    stem = path.stem
    targets = ", ".join(f"{t.name} (Exchange {t.version})" for t in a.targets)
    lines = [
        f"# exmig playbook for {a.domain}, written by `exmig init`.",
        f"# Source: {a.source.name} (Exchange 2010); targets: {targets}.",
        "#",
        "# What exmig does with it (`exmig steps`): on the source it makes the certificate request, the CA signs it,",
        "# then it installs the CA's intermediate, completes the request, enables the certificate for the services",
        "# below, exports a PFX and imports and enables it on every target.",
        "#",
        "# Adapt the subject, the user names and the authentication, then:",
        f"#   exmig validate {path.name}    # one line naming file:line: field on any problem",
        f"#   exmig rehearse {path.name}    # the whole migration against emulated copies of these servers",
        f"#   exmig plan {path.name}        # what would be sent, as PowerShell",
        "# Editors check this file as you type after `exmig schema > exmig.schema.json` and, as its first line,",
        "#   # yaml-language-server: $schema=exmig.schema.json",
        "# No password is ever written here: credentials name environment variables or ask at a prompt.",
        "",
        "certificate:",
        _noted("  subject:", "the -SubjectName of New-ExchangeCertificate"),
        _noted(f"    CN: {_scalar(a.names[0])}", "the main name; also listed in domains"),
        _noted("    # C: US", "two-letter country code"),
        _noted("    # S: My State", "state or province"),
        "    # L: My City",
        "    # O: My Organization",
        _noted("  domains:", "the names clients use (subject alternative names)"),
    ]
    notes = {f"mail.{a.domain}": "moves to Exchange 2010 during coexistence",
             f"legacy.{a.domain}": "points at Exchange 2007 during coexistence"}
    lines += [_noted(f"    - {_scalar(n)}", notes[n]) if n in notes else f"    - {_scalar(n)}" for n in a.names]
    lines += [
        _noted("  key_size: 2048", "1024, 2048 or 4096"),
        _noted("  private_key_exportable: true", "must be true: the certificate is exported to the targets"),
        f"  friendly_name: {_scalar(a.domain[:63])}",
        _noted("  services: [IIS, SMTP, POP, IMAP]", "IIS, SMTP, POP, IMAP, UM; a server's `services:` overrides it"),
        "  # Names in use on the servers (virtual directory URLs, Autodiscover, connectors, POP/IMAP) that the",
        "  # certificate does not cover stop `exmig run` before the request. A fresh install uses each server's own",
        "  # name: accepted below so the first run can go. Move those URLs to a name in domains and remove these.",
        "  uncovered_ok:",
        *[line for server in [a.source, *a.targets] for line in (
            f"    - name: {_scalar(_lab_fqdn(server) if lab else server.host)}",
            "      reason: the server's own name in a default install's internal URLs",
        ) if lab or not _is_address(server.host)],
        "",
        "issuer:",
    ]
    if a.issuer == "manual":
        lines += [_noted("  type: manual", "exmig writes the CSR; send it to the CA, then run again with --certificate FILE"),
                  _noted(f"  csr_file: {_scalar(stem + '.csr')}", "written next to this playbook")]
    elif a.issuer == "files":
        lines += [_noted("  type: files", "the CA's answer, already on disk, relative to this playbook"),
                  _noted(f"  bundle: {_scalar(bundle_name(path))}", "the CA's .zip, .p7b or PEM bundle (leaf and chain)"),
                  "  # or: certificate: issued.crt  with  chain: [intermediate.crt]"]
    else:
        lines += [_noted("  type: lab", "the rehearsal lab's CA signs (exmig lab serve, exmig rehearse)")]
    lines += [
        "",
        "pfx_password:",
        _noted("  generate: true", "the PFX travels in memory only: a fresh random password per run"),
        "",
        "servers:",
    ]
    for index, (server, role) in enumerate([(a.source, "source"), *((t, "target") for t in a.targets)]):
        lines += [
            f"  - name: {_scalar(server.name)}",
            f"    version: {server.version}",
            _noted(f"    role: {role}", "the request is made here" if role == "source" else "receives the PFX"),
            "    connection:",
        ]
        if lab:
            lines += [_noted("      host: 127.0.0.1", f"the lab; the real server: {server.host}"),
                      _noted(f"      port: {_LAB_PORT + index}", "exmig lab serve listens here")]
        else:
            lines.append(f"      host: {_scalar(server.host)}")
        if server.version == 2010:
            lines.append("      # Exchange 2010's remote PowerShell: http://<host>/PowerShell (Microsoft.Exchange).")
        else:
            lines.append("      # Exchange 2007: a Microsoft.PowerShell session at http://<host>:5985/wsman with the "
                         "Exchange snap-in.")
        if lab:
            lines.append(_noted("      auth: ntlm", "the lab speaks NTLM (no Kerberos realm)"))
        else:
            lines.append(_noted("      auth: kerberos", "pip install 'exmig[kerberos]'; or negotiate, ntlm, credssp, "
                                                 "basic (https)"))
        if server.version == 2010:
            lines.append(_noted(f"      system_port: {_LAB_PORT + index if lab else 5985}",
                           "Windows-level steps (certutil, files): the WinRM listener"))
        lines.append("    credentials:")
        if lab:
            lines += ["      username: administrator",
                      _noted("      password: {env: EXMIG_LAB_PASSWORD, lab_default: true}",
                             "the lab's documented password when unset")]
        else:
            # Kerberos wants the principal, user@REALM with the realm in capitals as AD writes it.
            lines += [_noted(f"      username: {_scalar('administrator@' + a.domain.upper())}",
                             "the account's UPN, user@REALM"),
                      _noted(f"      password: {{env: {_env_name(server.name)}}}",
                             "or {prompt: true}; with kerberos leave it out to use your kinit ticket")]
        lines.append(_noted("    workdir: C:\\Certs", "remote working folder"))
        if lab:
            lines.append("    tls_ports: {" + ", ".join(f"{k}: {v + index}" for k, v in _LAB_TLS.items()) + "}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def refuse_existing(path: Path) -> None:
    if has_control(str(path)):
        raise UsageError(f"{path!r}: give a file name without control characters")
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path}: exists; exmig init does not overwrite a file: give another PATH or move it away")


def write_playbook(answers: Answers, path: Path) -> str:
    """Render, read the text back with the loader, then create the file (never replacing one)."""
    check_answers(answers)
    refuse_existing(path)
    text = render(answers, path)
    with tempfile.TemporaryDirectory(prefix="exmig-init-") as tmp:
        probe = Path(tmp) / path.name
        probe.write_text(text, encoding="utf-8")
        data, source = load_yaml(probe)
        parse_playbook(data, source)  # a failure here is exmig's bug: nothing is written
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise UsageError(f"{path}: exists; exmig init does not overwrite a file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


def bundle_name(path: Path) -> str:
    return path.stem + "-ca.zip"


def summary(answers: Answers, path: Path) -> str:
    targets = ", ".join(t.name for t in answers.targets)
    text = f"wrote {path}: source {answers.source.name}, targets {targets}, issuer {answers.issuer}\n"
    if answers.issuer == "files":
        text += (f"next: put the CA's answer at {path.parent / bundle_name(path)} (or name its files under "
                 f"issuer:), then exmig validate {path}\n")
    else:
        text += f"next: exmig validate {path}; exmig rehearse {path}\n"
    return text


_ATTEMPTS = 5  # a prompt asks again after a bad answer, this many times at most


def _ask(question: str, default: str | None, parse: Callable[[str], T]) -> T:
    import typer

    for _ in range(_ATTEMPTS):
        answer = typer.prompt(question, default=default)
        try:
            return parse(answer.strip())
        except UsageError as exc:
            typer.echo(f"  {exc}", err=True)
    raise UsageError(f"{question}: no usable answer after {_ATTEMPTS} tries")


def _split(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text) if part]


def gather(domain: str | None, names: list[str] | None, source: str | None, targets: list[str] | None,
           issuer: str | None, interactive: bool) -> Answers:
    """The answers from the flags; what is missing is asked on a terminal (and refused without one)."""
    missing = [flag for flag, value in (("--domain", domain), ("--source", source), ("--target", targets))
               if not value]
    if missing and not interactive:
        raise UsageError(f"exmig init: give {', '.join(missing)} (no terminal to ask on), e.g. --domain example.org "
                         "--source EX2010=ex2010.example.org --target EX2007=ex2007.example.org:2007")
    ask = bool(missing)  # with every required flag given, nothing is asked
    d = (parse_domain(domain) if domain else
         _ask("Mail domain (e.g. example.org)", None, lambda text: parse_domain(text, "")))
    if names:
        n = parse_names(names)
    elif ask:
        n = _ask("Names on the certificate (mail. and autodiscover. move to 2010, legacy. stays on 2007)",
                 ", ".join(default_names(d)), lambda text: parse_names(_split(text), ""))
    else:
        n = default_names(d)
    s = (parse_server("--source", source, 2010) if source else
         _ask("The Exchange 2010 source, NAME=HOST", f"EX2010=ex2010.{d}",
              lambda text: parse_server("", text, 2010)))
    t = ([parse_server("--target", value, 2007) for value in targets] if targets else
         _ask("The targets, NAME=HOST[:VERSION] (2007 or 2010), separated by commas", f"EX2007=ex2007.{d}:2007",
              lambda text: [parse_server("", value, 2007) for value in _split(text)]))
    i = issuer or (_ask("Issuer: manual (you send the CSR to a CA), files (the CA's answer is on disk) or lab",
                        "manual", _issuer) if ask else "manual")
    answers = Answers(domain=d, names=n, source=s, targets=t, issuer=i)
    check_answers(answers)
    return answers


def _issuer(text: str) -> str:
    if text not in ISSUERS:
        raise UsageError(f"'{text}': use one of {', '.join(ISSUERS)}")
    return text
