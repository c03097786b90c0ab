"""The lab's Kerberos acceptor through the real clients: pypsrp, and raw tokens from pyspnego over requests."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import spnego
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from spnego.channel_bindings import GssChannelBindings

from orchestrator.lab.auth import tls_server_end_point
from orchestrator.lab.ca import LabCA
from orchestrator.lab.server import LabServer
from tests.kerberos.conftest import HOST, PASSWORD, USER


def kerberos_wsman(srv: LabServer, path: str = "PowerShell", **kw: object) -> WSMan:
    args: dict[str, object] = {"auth": "kerberos", "username": USER, "password": PASSWORD, "ssl": False,
                               "negotiate_hostname_override": HOST, "operation_timeout": 5, "read_timeout": 10}
    args.update(kw)
    return WSMan("127.0.0.1", port=srv.port, path=path, **args)  # type: ignore[arg-type]


def session_user(wsman: WSMan, configuration: str = "Microsoft.Exchange") -> str:
    with RunspacePool(wsman, configuration_name=configuration) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        out = ps.invoke()
        assert not ps.had_errors
        return str(out[0].adapted_properties["User"])


def executed(srv: LabServer) -> list:
    return [r for r in srv.log.records() if r.action]


def test_kerberos_in_negotiate_with_spnego_session_encryption(kerberos_server: Callable[..., LabServer]) -> None:
    srv = kerberos_server(auth=("negotiate",))
    assert session_user(kerberos_wsman(srv)) == USER.lower()
    records = executed(srv)
    assert records and all(r.auth == "negotiate" and r.mechanism == "kerberos" and r.encrypted for r in records)


def test_kerberos_scheme_with_kerberos_session_encryption(kerberos_server: Callable[..., LabServer]) -> None:
    # A listener that offers only `Kerberos`: pypsrp then encrypts as HTTP-Kerberos-session-encrypted.
    srv = kerberos_server(auth=("kerberos",))
    assert session_user(kerberos_wsman(srv, "wsman"), "Microsoft.PowerShell") == USER.lower()
    records = executed(srv)
    assert records and all(r.auth == "kerberos" and r.mechanism == "kerberos" and r.encrypted for r in records)


def test_ntlm_is_refused_on_the_kerberos_only_exchange_endpoint(kerberos_server: Callable[..., LabServer]) -> None:
    srv = kerberos_server(users={USER.lower(): PASSWORD}, kerberos_only=("/PowerShell",))
    ntlm = kerberos_wsman(srv, auth="ntlm", username=USER.lower())
    with pytest.raises(WSManFaultError) as caught:
        session_user(ntlm)
    # What pypsrp users see from real Exchange (jborean93/pypsrp issue #187).
    assert "No details returned by the server" in str(caught.value)
    assert any(r.ntlm_refused and r.status == 500 for r in srv.log.records())
    # The same NTLM credentials are fine on /wsman, and Kerberos is fine on /PowerShell.
    assert session_user(kerberos_wsman(srv, "wsman", auth="ntlm", username=USER.lower()),
                        "Microsoft.PowerShell") == USER.lower()
    assert session_user(kerberos_wsman(srv)) == USER.lower()
    assert not any(r.mechanism == "ntlm" and r.action and not r.ntlm_refused and r.path.lower() == "/powershell"
                   for r in srv.log.records())


def _token(channel_bindings: GssChannelBindings | None = None) -> bytes:
    context = spnego.client(USER, PASSWORD, hostname=HOST, service="HTTP", protocol="kerberos",
                            channel_bindings=channel_bindings)
    token = context.step()
    assert token
    return token


def _post(url: str, token: bytes, verify: str | bool = False) -> int:
    # A new session per call: a new TCP connection, as a replaying attacker would open.
    with requests.Session() as session:
        headers = {"Authorization": "Kerberos " + base64.b64encode(token).decode(),
                   "Content-Type": "application/soap+xml;charset=UTF-8"}
        return session.post(url, data=b"", headers=headers, verify=verify, timeout=10).status_code


def test_a_replayed_kerberos_token_is_refused(kerberos_server: Callable[..., LabServer]) -> None:
    srv = kerberos_server()
    token = _token()
    assert _post(srv.url("wsman"), token) == 200
    assert _post(srv.url("wsman"), token) == 401  # MIT's replay cache, in the lab's folder
    assert _post(srv.url("wsman"), _token()) == 200  # a fresh authenticator is fine


@pytest.fixture
def https_server(kerberos_server: Callable[..., LabServer], tmp_path: Path) -> tuple[LabServer, str, bytes]:
    ca = LabCA.load_or_create(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["localhost", HOST, "127.0.0.1"])
    srv = kerberos_server(tls=(cert, key))
    return srv, str(ca.write_ca_file(tmp_path / "ca.pem")), cert


def test_https_with_channel_bindings(https_server: tuple[LabServer, str, bytes]) -> None:
    srv, ca_file, cert = https_server
    # pypsrp sends the RFC 5929 tls-server-end-point binding of the certificate it sees.
    assert session_user(kerberos_wsman(srv, ssl=True, cert_validation=ca_file)) == USER.lower()
    assert all(not r.encrypted and r.mechanism == "kerberos" for r in executed(srv))
    right = GssChannelBindings(application_data=tls_server_end_point(cert))
    wrong = GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(32))
    assert _post(srv.url("wsman"), _token(right), verify=ca_file) == 200
    assert _post(srv.url("wsman"), _token(wrong), verify=ca_file) == 401
