"""Each broken playbook fails with one line: file:line: field: what is wrong and what is allowed."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

GOOD = textwrap.dedent("""\
    certificate:
      subject:
        C: US
        O: My Organization
        CN: mail.mitserv.net
      domains:
        - mail.mitserv.net
        - autodiscover.mitserv.net
      key_size: 2048
      friendly_name: mitserv
    issuer:
      type: manual
    servers:
      - name: EX2010
        version: 2010
        role: source
        connection:
          host: ex2010.mitserv.net
        credentials:
          username: admin@mitserv.net
          password: {env: EX_PW}
      - name: EX2007
        version: 2007
        role: target
        connection:
          host: ex2007.mitserv.net
        credentials:
          username: admin@mitserv.net
          password: {prompt: true}
    """)


CASES = [
    # (name, old text, new text, expected line, expected substring)
    ("wrong type", "key_size: 2048", "key_size: big", 9, "certificate.key_size: 'big' is not allowed; use 1024, 2048 or 4096"),
    ("key size 3000", "key_size: 2048", "key_size: 3000", 9,
     "certificate.key_size: 3000 is not a key size Exchange accepts; use 1024, 2048 or 4096"),
    ("unknown key", "  friendly_name: mitserv\n", "  friendly_name: mitserv\n  colour: blue\n", 11,
     "certificate.colour: unknown key"),
    ("two sources", "    role: target", "    role: source", 1, "exactly one server must have `role: source`"),
    ("bad domain", "    - autodiscover.mitserv.net", "    - autodiscover_mitserv.net", 8,
     "certificate.domains[1]: 'autodiscover_mitserv.net' is not a valid host name"),
    ("control character", "O: My Organization", "O: \"My\\u0085Org\"", 4,
     "certificate.subject.O: must be non-empty text without control characters"),
    ("friendly name of 80 chars", "friendly_name: mitserv", "friendly_name: " + "x" * 80, 10,
     "certificate.friendly_name: is 80 characters; Exchange requires fewer than 64"),
    ("password in the file", "password: {env: EX_PW}", "password: hunter2", 21,
     "servers[0].credentials.password: a password must not be written in the playbook; use "
     "`password: {env: VARIABLE}` or `password: {prompt: true}`"),
    ("pfx password in the file", "issuer:\n", "pfx_password: hunter2\nissuer:\n", 11,
     "pfx_password: a password must not be written in the playbook"),
    ("version 2013", "version: 2007", "version: 2013", 23, "servers[1].version: 2013 is not supported; use 2007 or 2010"),
    ("basic over http", "host: ex2007.mitserv.net", "host: ex2007.mitserv.net\n      auth: basic", 22,
     "servers[1]: server EX2007: auth basic over connection.scheme http sends the credentials in clear; use "
     "scheme: https"),
    ("basic over https, system endpoint http", "host: ex2010.mitserv.net",
     "host: ex2010.mitserv.net\n      auth: basic\n      scheme: https\n      system_scheme: http", 14,
     "servers[0]: server EX2010: auth basic over connection.system_scheme http"),
    ("unknown auth", "host: ex2007.mitserv.net", "host: ex2007.mitserv.net\n      auth: digest", 27,
     "servers[1].connection.auth: 'digest' is not allowed; use 'basic', 'ntlm', 'negotiate', 'kerberos' or 'credssp'"),
    ("CN missing from domains", "CN: mail.mitserv.net", "CN: owa.mitserv.net", 1,
     "domains must include the subject CN 'owa.mitserv.net'"),
    ("key not exportable", "key_size: 2048", "key_size: 2048\n  private_key_exportable: false", 1,
     "certificate.private_key_exportable must be true"),
    ("unknown issuer", "type: manual", "type: email", 12, "issuer.type: 'email' is not an issuer type; use manual, files, lab or acme"),
    ("unknown service", "friendly_name: mitserv", "friendly_name: mitserv\n  services: [IIS, OWA]", 11,
     "certificate.services[1]: 'OWA' is not allowed; use 'IIS', 'SMTP', 'POP', 'IMAP' or 'UM'"),
    ("missing field", "    connection:\n      host: ex2007.mitserv.net\n", "", 22, "servers[1].connection: is required"),
    ("files issuer file missing", "type: manual", "type: files\n  certificate: nothere.crt", 13,
     "issuer.certificate: file 'nothere.crt' not found"),
    ("2010 settings on 2007", "      host: ex2007.mitserv.net", "      host: ex2007.mitserv.net\n      system_port: 5985",
     22, "servers[1]: connection.system_port is for Exchange 2010"),
    ("2010 endpoint on 2007", "      host: ex2007.mitserv.net", "      host: ex2007.mitserv.net\n      path: /PowerShell",
     22, "servers[1]: connection.path /PowerShell is Exchange 2010's endpoint"),
    ("retire_self_signed alone", "issuer:\n", "retire_self_signed: true\nissuer:\n", 11,
     "retire_self_signed: only applies with `retire_previous: true`; set that too, or remove retire_self_signed"),
    ("retire_without_backup alone", "issuer:\n", "retire_without_backup: true\nissuer:\n", 11,
     "retire_without_backup: only applies with `retire_previous: true`; set that too, or remove "
     "retire_without_backup"),
    ("retire with a generated pfx password", "issuer:\n", "retire_previous: true\nissuer:\n", 1,
     "backup_password: retire_previous backs up each certificate it removes, and pfx_password is generated for the "
     "run and never shown, so nobody could open the backups; set `backup_password: {env: VARIABLE}`"),
    ("generated backup password", "issuer:\n", "backup_password: {generate: true}\nissuer:\n", 11,
     "backup_password: a generated password is never shown, so nobody could open the backups"),
    ("backup password in the file", "issuer:\n", "backup_password: hunter2\nissuer:\n", 11,
     "backup_password: a password must not be written in the playbook; use `backup_password: {env: VARIABLE}`"),
    ("bad workdir", "    role: target\n", "    role: target\n    workdir: Certs\n", 25,
     "servers[1].workdir: 'Certs' is not an absolute Windows folder such as C:\\Certs"),
]


@pytest.mark.parametrize("name,old,new,line,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_playbook(tmp_path: Path, exmig: Callable, name: str, old: str, new: str, line: int,
                          expected: str) -> None:
    assert old in GOOD
    path = tmp_path / "broken.yml"
    path.write_text(GOOD.replace(old, new, 1))
    result = exmig("validate", path)
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith(f"exmig: error: {path}:{line}: "), result.err
    assert expected in result.err


def test_the_good_playbook_validates(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "good.yml"
    path.write_text(GOOD)
    result = exmig("validate", path)
    assert result.code == 0, result.err
    assert "ok (2 servers: source EX2010, targets EX2007; issuer manual)" in result.out


def test_malformed_yaml(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("certificate:\n  subject: [unclosed\n")
    result = exmig("plan", path)
    assert result.code == 2
    assert result.err.startswith(f"exmig: error: {path}:") and "not valid YAML" in result.err
    assert len(result.err.splitlines()) == 1


def test_duplicate_key(tmp_path: Path, exmig: Callable) -> None:
    path = tmp_path / "dup.yml"
    path.write_text(GOOD.replace("issuer:\n", "issuer:\n  type: lab\n", 1))
    result = exmig("validate", path)
    assert result.code == 2 and "not valid YAML" in result.err and "duplicate" in result.err.lower()


def test_missing_file(tmp_path: Path, exmig: Callable) -> None:
    result = exmig("plan", tmp_path / "nope.yml")
    assert result.code == 2
    assert result.err == f"exmig: error: {tmp_path / 'nope.yml'}: file not found; give the path of a playbook (.yml)\n"


def test_retire_options_with_a_password_the_admin_knows_validate(tmp_path: Path) -> None:
    from orchestrator.backups import backup_password_source
    from orchestrator.playbook import load_playbook

    path = tmp_path / "retire.yml"
    path.write_text(GOOD.replace("issuer:\n", "retire_previous: true\nretire_self_signed: true\nrollback_on_failure: "
                                 "true\nbackup_password: {env: EXMIG_BACKUP}\nissuer:\n", 1))
    playbook = load_playbook(path).playbook
    assert playbook.retire_previous and playbook.retire_self_signed and playbook.rollback_on_failure
    assert backup_password_source(playbook) == playbook.backup_password
    # Without backups the generated PFX password is no obstacle, and no backup is possible.
    path.write_text(GOOD.replace("issuer:\n", "retire_previous: true\nretire_without_backup: true\nissuer:\n", 1))
    assert backup_password_source(load_playbook(path).playbook) is None


def test_basic_over_https_on_every_endpoint_is_accepted(tmp_path: Path) -> None:
    from orchestrator.playbook import load_playbook

    text = GOOD.replace("host: ex2010.mitserv.net", "host: ex2010.mitserv.net\n      auth: basic\n      scheme: https")
    path = tmp_path / "basic.yml"
    path.write_text(text)
    server = load_playbook(path).playbook.source
    assert server.auth == "basic" and server.system_endpoint.scheme == "https"
