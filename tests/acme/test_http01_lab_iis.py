"""http-01 through the lab's emulated IIS: a token written with the lab's Set-Content, fetched by real pebble."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.acme_issue import issue
from orchestrator.acme_issue.errors import AcmeValidationFailed
from orchestrator.acme_issue.http01 import CHALLENGE_FOLDER, WEB_CONFIG, WEB_CONFIG_PATH, token_path, url_path
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, build_registry
from orchestrator.lab.iis_http import IisHttp
from tests.acme.conftest import NAMES, AcmeLab, make_csr
from tests.lab_exchange.helpers import Shell


class SetContentResponder:
    """The token as exmig puts it on a server: New-Item and Set-Content in the system endpoint's session."""

    challenge_type = "http-01"

    def __init__(self, shell: Shell, web_config: bool = True) -> None:
        self.shell = shell
        self.web_config = web_config

    def place(self, name: str, token: str, key_authorization: str) -> None:
        self.shell.one("New-Item", ("Path", CHALLENGE_FOLDER), ("ItemType", "Directory"), ("Force", None))
        if self.web_config:
            self.shell.one("Set-Content", ("Path", WEB_CONFIG_PATH), ("Value", WEB_CONFIG), ("Encoding", "UTF8"))
        self.shell.one("Set-Content", ("Path", token_path(token)), ("Value", key_authorization), ("Encoding", "Ascii"))

    def remove(self, name: str, token: str, key_authorization: str) -> None:
        if self.shell.one("Test-Path", ("Path", token_path(token))):
            self.shell.one("Remove-Item", ("Path", token_path(token)))

    def ready(self) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> ExchangeServerModel:
    return ExchangeServerModel.load_or_create(tmp_path / "EX2010", name="EX2010", version="2010",
                                              fqdn="ex2010.mitserv.net")


@pytest.fixture
def shell(server: ExchangeServerModel) -> Shell:
    return Shell(build_registry(server, LabSettings()), "Microsoft.PowerShell")


@pytest.fixture
def iis(server: ExchangeServerModel, acme_lab: AcmeLab) -> Iterator[IisHttp]:
    # On the port pebble validates http-01 on (a real CA: port 80); the names resolve to 127.0.0.1 at named.
    with IisHttp(server.name, server.fs, port=acme_lab.pebble.http_port, require_ssl=lambda: server.iis_require_ssl,
                 lock=server.lock) as listener:
        yield listener


def _files_left(server: ExchangeServerModel) -> list[str]:
    if not server.fs.is_dir(CHALLENGE_FOLDER):
        return []
    return [path for path, is_dir in server.fs.children(CHALLENGE_FOLDER) if not is_dir]


def test_http01_token_set_content_wrote_is_fetched_by_the_ca_and_removed(
        acme_lab: AcmeLab, server: ExchangeServerModel, shell: Shell, iis: IisHttp, tmp_path: Path) -> None:
    result = issue(make_csr()[0], acme_lab.settings(), tmp_path / "state", SetContentResponder(shell))
    assert result.issued.leaf is not None
    # pebble fetched every name's token from the emulated IIS (Set-Content's CRLF is whitespace the CA ignores).
    fetched = [path for path, status in iis.requests if status == 200 and path.startswith(url_path(""))]
    assert len(fetched) >= len(NAMES)
    # Nothing but the folder's web.config is left.
    assert _files_left(server) == [WEB_CONFIG_PATH]


def test_http01_without_the_mime_map_iis_refuses_and_the_ca_says_so(
        acme_lab: AcmeLab, server: ExchangeServerModel, shell: Shell, iis: IisHttp, tmp_path: Path) -> None:
    with pytest.raises(AcmeValidationFailed) as exc:
        issue(make_csr(["mail.mitserv.net"])[0], acme_lab.settings(), tmp_path, SetContentResponder(shell, False))
    text = str(exc.value)
    assert "\n" not in text and "mail.mitserv.net over http-01" in text and "404" in text
    assert ("/.well-known/acme-challenge/" in text) and _files_left(server) == []


def test_http01_while_the_site_requires_ssl(acme_lab: AcmeLab, server: ExchangeServerModel, shell: Shell,
                                           iis: IisHttp, tmp_path: Path) -> None:
    server.iis_require_ssl = True  # Enable-ExchangeCertificate -Services IIS without -DoNotRequireSsl
    with pytest.raises(AcmeValidationFailed) as exc:
        issue(make_csr(["mail.mitserv.net"])[0], acme_lab.settings(), tmp_path, SetContentResponder(shell))
    assert "403" in str(exc.value) and _files_left(server) == [WEB_CONFIG_PATH]


# --- the emulated IIS's rules, without a CA ------------------------------------------------------------


def test_iis_serves_only_the_web_root(server: ExchangeServerModel) -> None:
    iis = IisHttp(server.name, server.fs)
    server.fs.mkdir(CHALLENGE_FOLDER)
    server.fs.write(WEB_CONFIG_PATH, WEB_CONFIG.encode())
    server.fs.write(CHALLENGE_FOLDER + "\\tok_en-123", b"tok_en-123.thumb\r\n")
    server.fs.write("C:\\Windows\\secret.txt", b"not served")
    assert iis.respond("GET", url_path("tok_en-123"))[:3] == (200, "OK", b"tok_en-123.thumb\r\n")
    assert iis.respond("GET", "/.well-known/acme-challenge/web.config")[0] == 404
    for escape in ("/../Windows/secret.txt", "/%2e%2e/Windows/secret.txt", "/..%5cWindows%5csecret.txt"):
        assert iis.respond("GET", escape)[0] == 404, escape
    assert iis.respond("DELETE", url_path("tok_en-123"))[0] == 405
    server.fs.remove(WEB_CONFIG_PATH)
    assert iis.respond("GET", url_path("tok_en-123"))[0] == 404  # 404.3: no MIME type for "."


def test_a_token_that_is_not_base64url_never_becomes_a_path() -> None:
    from orchestrator.acme_issue.http01 import BadToken

    for token in ("..\\..\\Windows\\win.ini", "abc/def" * 4, "a" * 8, "tok en" * 4):
        with pytest.raises(BadToken):
            token_path(token)


class RoutedResponder:
    """Each name's token on the server(s) the name points at (issuer.client_names), as the issue step does."""

    challenge_type = "http-01"

    def __init__(self, shells: dict[str, Shell], targets: dict[str, list[str]]) -> None:
        self.by_server = {name: SetContentResponder(shell) for name, shell in shells.items()}
        self.targets = targets

    def place(self, name: str, token: str, key_authorization: str) -> None:
        for server in self.targets[name]:
            self.by_server[server].place(name, token, key_authorization)

    def remove(self, name: str, token: str, key_authorization: str) -> None:
        for server in self.targets[name]:
            self.by_server[server].remove(name, token, key_authorization)

    def ready(self) -> None:
        pass


def test_http01_each_name_is_proven_on_the_server_it_points_at(tmp_path: Path) -> None:
    from orchestrator.lab.acme_services import LabAcme

    servers = ["EX2010", "EX2007"]
    targets = {"mail.mitserv.net": ["EX2010"], "autodiscover.mitserv.net": ["EX2010"], "legacy.mitserv.net": ["EX2007"]}
    models = {name: ExchangeServerModel.load_or_create(tmp_path / name, name=name, version=name[2:],
                                                       fqdn=f"{name.lower()}.mitserv.net") for name in servers}
    shells = {name: Shell(build_registry(m, LabSettings()), "Microsoft.PowerShell") for name, m in models.items()}
    with LabAcme(tmp_path / "acme", targets, servers) as lab:
        assert lab.pebble is not None
        listeners = {name: IisHttp(name, m.fs, host=lab.addresses[name], port=lab.pebble.http_port, lock=m.lock)
                     for name, m in models.items()}
        for listener in listeners.values():
            listener.start()
        try:
            overrides = lab.issuer_overrides()
            from orchestrator.acme_issue import AcmeSettings

            settings = AcmeSettings(str(overrides["directory"]), ca_bundle=Path(str(overrides["ca_bundle"])),
                                    timeout=30)
            issue(make_csr()[0], settings, tmp_path / "state", RoutedResponder(shells, targets))
        finally:
            for listener in listeners.values():
                listener.stop()
        root = lab.root_file.read_bytes()
        assert root == lab.pebble.root_pem()
    served = {name: [p for p, status in listener.requests if status == 200] for name, listener in listeners.items()}
    assert len(served["EX2007"]) >= 1 and len(served["EX2010"]) >= 2
    assert not set(served["EX2007"]) & set(served["EX2010"])  # legacy's token only ever asked of EX2007
    for model in models.values():
        assert _files_left(model) == [WEB_CONFIG_PATH]
