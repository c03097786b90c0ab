"""pypsrp (unmodified) against the lab's PSRP shells."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from orchestrator.lab.server import EXCHANGE, POWERSHELL, LabServer

from .conftest import MVP_TYPES, PASSWORD, SERVICES_TYPES, THING_TYPES, USER

NO_LANGUAGE_TEXT = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
)


def wsman_for(srv: LabServer, path: str = "PowerShell", **kw: Any) -> WSMan:
    kw.setdefault("auth", "basic")
    kw.setdefault("username", USER)
    kw.setdefault("password", PASSWORD)
    kw.setdefault("operation_timeout", 5)
    kw.setdefault("read_timeout", 10)
    if kw["auth"] == "basic" and not kw.get("ssl"):
        kw.setdefault("encryption", "never")
    kw.setdefault("ssl", False)
    return WSMan("127.0.0.1", port=srv.port, path=path, **kw)


def exercise_exchange_pool(pool: RunspacePool) -> None:
    """Everything the migration tool needs from a session, in one pool."""
    # Objects: adapted vs extended land where real Exchange puts them.
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing").add_parameter("Name", "cert1")
    out = ps.invoke()
    assert not ps.had_errors
    assert len(out) == 1
    thing = out[0]
    assert isinstance(thing, GenericComplexObject)
    assert thing.types == THING_TYPES
    assert thing.adapted_properties["Name"] == "cert1"
    assert thing.adapted_properties["Size"] == 42
    assert thing.adapted_properties["Enabled"] is True
    assert "PSComputerName" not in thing.adapted_properties
    assert thing.extended_properties["PSComputerName"] == "EX1"
    assert str(thing) == "[Thing cert1]"
    services = thing.adapted_properties["Services"]
    assert str(services) == "IIS, SMTP" and services.property_sets == [24]
    assert services.types == SERVICES_TYPES
    assert thing.adapted_properties["Tags"] == ["x", "y"]
    names = thing.adapted_properties["Names"]
    assert isinstance(names, GenericComplexObject) and names.types == MVP_TYPES

    # Non-terminating error: record in streams.error, had_errors stays False, output continues.
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-LabMixed")
    out = ps.invoke()
    assert out == ["first", "second"]
    assert not ps.had_errors
    assert [str(e) for e in ps.streams.error] == ["soft failure"]
    assert ps.streams.error[0].fq_error == "LabSoft,Lab.Test.WriteMixed"
    assert [w.message for w in ps.streams.warning] == ["be careful"]

    # Terminating error: pipeline Failed, had_errors, the record carries id and category.
    ps = PowerShell(pool)
    ps.add_cmdlet("Invoke-LabFailure")
    out = ps.invoke()
    assert ps.had_errors
    assert ps.state == PSInvocationState.FAILED
    assert out == ["before failure"]
    err = ps.streams.error[-1]
    assert str(err) == "hard failure"
    assert err.fq_error == "LabHard,Lab.Test.Fail"
    assert err.category == 7  # InvalidOperation
    assert err.reason == "InvalidOperationException"

    # 600 KB byte[] parameter: fragmented over Send, echoed back intact.
    payload = os.urandom(600 * 1024)
    ps = PowerShell(pool)
    ps.add_cmdlet("Send-LabBytes").add_parameter("Data", payload)
    out = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    assert out[0].adapted_properties["Length"] == len(payload)
    assert out[0].adapted_properties["FileData"] == payload

    # SecureString after the key exchange: the server decrypts it.
    pool.exchange_keys()
    secret = "S3cret-Pfx-Pass!"
    for expected, result in ((secret, True), ("other", False)):
        ps = PowerShell(pool)
        ps.add_cmdlet("Test-LabSecret").add_parameter("Password", TaggedValue("SS", secret))
        ps.add_parameter("Expected", expected)
        assert ps.invoke() == [result]
        assert not ps.had_errors


def test_exchange_endpoint_basic_http(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        exercise_exchange_pool(pool)


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_exchange_endpoint_ntlm_encrypted_http(make_server: Callable[..., LabServer], auth: str) -> None:
    srv = make_server(auth=("negotiate",))
    w = wsman_for(srv, auth=auth, encryption="always")
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        exercise_exchange_pool(pool)
    records = srv.log.records()
    executed = [r for r in records if r.action]
    assert executed and all(r.encrypted and r.auth == "negotiate" for r in executed)
    assert records[0].status == 401 and records[1].status == 401 and records[2].status == 200


def test_exchange_endpoint_basic_https_validates_lab_ca(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes], ca_file: Path
) -> None:
    srv = make_server(auth=("basic",), tls=server_cert)
    w = wsman_for(srv, ssl=True, cert_validation=str(ca_file))
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        exercise_exchange_pool(pool)


def test_https_without_trusting_lab_ca_fails(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes]
) -> None:
    import requests

    srv = make_server(auth=("basic",), tls=server_cert)
    w = wsman_for(srv, ssl=True, cert_validation=True)
    with pytest.raises(requests.exceptions.SSLError):
        RunspacePool(w, configuration_name="Microsoft.Exchange").open()


def test_ntlm_over_https_without_message_encryption(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes], ca_file: Path
) -> None:
    srv = make_server(auth=("negotiate",), tls=server_cert)
    w = wsman_for(srv, auth="ntlm", ssl=True, cert_validation=str(ca_file))
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        info = ps.invoke()[0]
    assert info.adapted_properties["User"] == USER
    assert info.adapted_properties["Configuration"] == "Microsoft.Exchange"
    assert info.adapted_properties["CanPrompt"] is False  # pypsrp's default host=None
    assert not any(r.encrypted for r in srv.log.records())


def test_domain_user_over_ntlm(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    w = wsman_for(srv, auth="ntlm", username="LAB\\operator", password="Op3rator-Pass", encryption="always")
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        assert ps.invoke()[0].adapted_properties["User"] == "LAB\\operator"


def test_script_rejected_on_no_language_endpoint(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_script("$ExecutionContext.SessionState.LanguageMode")
        out = ps.invoke()
        assert out == []
        assert ps.had_errors
        assert str(ps.streams.error[-1]) == NO_LANGUAGE_TEXT
        assert ps.streams.error[-1].fq_error == "ScriptsNotAllowed"


def test_script_in_a_later_statement_refuses_the_whole_pipeline(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(allow_unencrypted=True, configurations=[replace(EXCHANGE, powershell="5.1")])
    with RunspacePool(wsman_for(srv), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing").add_statement().add_script("Get-Date")
        assert ps.invoke() == [] and ps.had_errors


@pytest.mark.parametrize(("powershell", "protocol", "statements_run"),
                         [("2.0", "2.1", 1), ("3.0", "2.2", 2), ("5.1", "2.3", 2)])
def test_the_endpoints_powershell_sets_the_protocol_and_the_statements_run(
        make_server: Callable[..., LabServer], powershell: str, protocol: str, statements_run: int) -> None:
    """PowerShell 2.0 speaks PSRP 2.1, which has no ExtraCmds: the lab runs only the first statement
    (UNCONFIRMED what a real 2.0 server does; exmig never sends it several)."""
    srv = make_server(allow_unencrypted=True, configurations=[replace(POWERSHELL, powershell=powershell)])
    with RunspacePool(wsman_for(srv, path="wsman"), configuration_name="Microsoft.PowerShell") as pool:
        assert pool.protocol_version == protocol
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing").add_parameter("Name", "one").add_statement()
        ps.add_cmdlet("Get-LabThing").add_parameter("Name", "two")
        out = ps.invoke()
        assert not ps.had_errors
        assert len(out) == statements_run, out


def test_script_on_full_language_endpoint_gets_lab_error(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server, path="wsman")) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-Date")
        ps.invoke()
        assert ps.had_errors
        assert "does not interpret PowerShell script text" in str(ps.streams.error[-1])


def test_exchange_configuration_at_wsman_path_is_a_wsman_fault(basic_server: LabServer) -> None:
    pool = RunspacePool(wsman_for(basic_server, path="wsman"), configuration_name="Microsoft.Exchange")
    with pytest.raises(WSManFaultError) as info:
        pool.open()
    assert info.value.code == 2150858811
    assert info.value.reason == (
        "The resource URI (http://schemas.microsoft.com/powershell/Microsoft.Exchange) was not found in the "
        "WS-Management catalog."
    )


def test_2007_server_offers_only_microsoft_powershell(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(configurations=["Microsoft.PowerShell"], allow_unencrypted=True)
    with RunspacePool(wsman_for(srv, path="wsman")) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        assert ps.invoke()[0].adapted_properties["Configuration"] == "Microsoft.PowerShell"
    with pytest.raises(WinRMTransportError) as info:
        RunspacePool(wsman_for(srv, path="PowerShell"), configuration_name="Microsoft.Exchange").open()
    assert info.value.code == 404


def test_path_is_case_insensitive(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server, path="powershell/"), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing")
        assert ps.invoke()[0].adapted_properties["Name"] == "default"


def test_statements_pipes_and_input(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Add-LabOne").add_parameter("Value", 1)
        ps.add_statement()
        ps.add_cmdlet("Add-LabOne").add_parameter("Value", 10).add_cmdlet("Add-LabOne")
        assert ps.invoke() == [2, 12]
        ps = PowerShell(pool)
        ps.add_cmdlet("Add-LabOne").add_cmdlet("Add-LabOne")
        assert ps.invoke(input=[1, 2, 3]) == [3, 4, 5]
        # Unknown cmdlet: PowerShell's CommandNotFoundException, terminating.
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Nothing")
        ps.invoke()
        assert ps.had_errors
        assert ps.streams.error[-1].fq_error == "CommandNotFoundException"
        # Unknown parameter: the registry's binding error reaches the client.
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing").add_parameter("Bogus", 1)
        ps.invoke()
        assert ps.had_errors and ps.streams.error[-1].fq_error.startswith("NamedParameterNotFound")


def test_stop_running_pipeline(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server, operation_timeout=1, read_timeout=5),
                      configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 3)
        ps.begin_invoke()
        time.sleep(0.2)
        t0 = time.monotonic()
        ps.stop()
        assert time.monotonic() - t0 < 5
        assert ps.state == PSInvocationState.STOPPED
        # The pool stays usable.
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing")
        assert len(ps.invoke()) == 1


def test_slow_pipeline_survives_operation_timeouts(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server, operation_timeout=1, read_timeout=5),
                      configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 2)
        assert ps.invoke() == ["slept"]
    timeouts = [r for r in basic_server.log.records() if r.wsman_fault == 2150858793]
    assert timeouts and all(r.action == "Receive" and r.status == 500 for r in timeouts)


def test_wrong_password_basic(basic_server: LabServer) -> None:
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(basic_server, password="wrong"), configuration_name="Microsoft.Exchange").open()
    assert basic_server.log.records()[-1].status == 401
    assert basic_server.shell_ids() == []


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_wrong_password_ntlm(make_server: Callable[..., LabServer], auth: str) -> None:
    srv = make_server(auth=("negotiate",))
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(srv, auth=auth, password="wrong", encryption="always"),
                     configuration_name="Microsoft.Exchange").open()
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(srv, auth=auth, username="nobody", encryption="always"),
                     configuration_name="Microsoft.Exchange").open()
    assert srv.shell_ids() == []


def test_basic_refused_over_plain_http_by_default(make_server: Callable[..., LabServer]) -> None:
    srv = make_server()  # AllowUnencrypted=false, like a default WinRM listener
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(srv), configuration_name="Microsoft.Exchange").open()


def test_plain_text_after_encryption_is_rejected(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    w = wsman_for(srv, auth="ntlm", encryption="always")
    pool = RunspacePool(w, configuration_name="Microsoft.Exchange")
    pool.open()
    # Same TCP connection, same authenticated context, but the client stops encrypting.
    w.transport.wrap_required = False
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing")
    with pytest.raises(AuthenticationError):
        ps.invoke()
    last = srv.log.records()[-1]
    assert last.status == 401 and not last.encrypted and last.action == ""


def test_shell_of_another_user_is_access_denied(basic_server: LabServer) -> None:
    pool = RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange")
    pool.open()
    other = wsman_for(basic_server, username="LAB\\operator", password="Op3rator-Pass")
    with pytest.raises(WSManFaultError) as info:
        other.delete(pool.shell.resource_uri, selector_set=pool.shell._selector_set)
    assert info.value.code == 5
    pool.close()


def test_unknown_shell_is_a_wsman_fault(basic_server: LabServer) -> None:
    pool = RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange")
    pool.open()
    pool.close()
    with pytest.raises(WSManFaultError) as info:
        pool.shell.wsman.delete(pool.shell.resource_uri, selector_set=pool.shell._selector_set)
    assert info.value.code == 2150858843


def test_request_counts_open_one_command_close(basic_server: LabServer) -> None:
    """Protocol minimum (notes §5): open 2, cmdlet 2, close 1."""
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        assert basic_server.log.actions() == ["Create", "Receive"]
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing")
        ps.invoke()
    assert basic_server.log.actions() == ["Create", "Receive", "Command", "Receive", "Delete"]
    assert all(r.status == 200 for r in basic_server.log.records())
    assert basic_server.log.totals()["connections"] == 1  # keep-alive


def test_request_counts_ntlm_encrypted(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    with RunspacePool(wsman_for(srv, auth="ntlm", encryption="always"),
                      configuration_name="Microsoft.Exchange") as pool:
        assert srv.log.actions() == ["(auth)", "(auth)", "(auth)", "Create", "Receive"]
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing")
        ps.invoke()
    assert len(srv.log) == 8
    assert [r.status for r in srv.log.records()][:3] == [401, 401, 200]


def test_concurrent_pools(basic_server: LabServer) -> None:
    results: list[Any] = []

    def run(i: int) -> None:
        with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-LabThing").add_parameter("Name", f"n{i}")
            results.append(ps.invoke()[0].adapted_properties["Name"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == ["n0", "n1", "n2", "n3"]


def test_pipeline_close_signals_terminate(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        with PowerShell(pool) as ps:
            ps.add_cmdlet("Get-LabThing")
            ps.invoke()
        # A terminated pipeline's CommandId is no longer valid: Windows' "command identifier that does not
        # exist" fault (pypsrp's recording test_psrp_receive_failure.yml).
        with pytest.raises(WSManFaultError) as info:
            pool.shell.receive("stdout", command_id=str(ps.id).upper())
        assert info.value.code == 2150858843
    assert basic_server.log.actions() == ["Create", "Receive", "Command", "Receive", "Signal", "Receive", "Delete"]


def test_client_host_enables_prompting(basic_server: LabServer) -> None:
    from pypsrp.host import PSHost, PSHostUserInterface

    host = PSHost(None, None, False, "lab-test-host", None, PSHostUserInterface(), "1.0")
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange", host=host) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        assert ps.invoke()[0].adapted_properties["CanPrompt"] is True


def test_request_counts_key_exchange_and_large_parameter(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        basic_server.log.clear()
        pool.exchange_keys()
        assert basic_server.log.actions() == ["Send", "Receive"]
        basic_server.log.clear()
        ps = PowerShell(pool)
        ps.add_cmdlet("Send-LabBytes").add_parameter("Data", os.urandom(616 * 1024))
        ps.invoke()
        # Command (first 512 KB envelope), the rest of the fragments on Send, the echo over 3 Receives.
        assert basic_server.log.actions() == ["Command", "Send", "Send", "Receive", "Receive", "Receive"]
        assert max(r.bytes_in for r in basic_server.log.records()) <= 512000
        assert max(r.bytes_out for r in basic_server.log.records()) <= 512000


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "192.168.0.1", "localhost", "::"])
def test_refuses_non_loopback_bind(registry: Any, host: str) -> None:
    with pytest.raises(ValueError, match="loopback|127.0.0.0/8"):
        LabServer("EX1", registry, {"a": "b"}, host=host)


def test_native_program_in_full_language_session(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server, path="wsman")) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("hostname.exe")
        assert ps.invoke() == ["EX1"]
        ps = PowerShell(pool)
        ps.add_cmdlet("C:\\Tools\\showargs.exe").add_argument("-addstore").add_argument("CA")
        ps.add_parameter("f").add_parameter("config", "a b")
        out = ps.invoke()
        # stdout one string per line; stderr as a non-terminating NativeCommandError; exit code 4 ignored
        assert out == ["[-addstore]", "[CA]", "[-f]", "[-config:a b]"]
        assert not ps.had_errors
        assert [(str(e), e.fq_error) for e in ps.streams.error] == [("note on stderr", "NativeCommandError")]


def test_native_program_not_visible_on_exchange_endpoint(basic_server: LabServer) -> None:
    with RunspacePool(wsman_for(basic_server), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("hostname.exe")
        ps.invoke()
        assert ps.had_errors and ps.streams.error[-1].fq_error == "CommandNotFoundException"


def test_idle_shells_expire(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(allow_unencrypted=True, shell_idle_timeout=0.2)
    abandoned = RunspacePool(wsman_for(srv), configuration_name="Microsoft.Exchange")
    abandoned.open()
    time.sleep(0.3)
    with RunspacePool(wsman_for(srv), configuration_name="Microsoft.Exchange"):
        assert len(srv.shell_ids()) == 1  # the abandoned one was discarded when this one was created
    with pytest.raises(WSManFaultError) as info:
        abandoned.shell.wsman.delete(abandoned.shell.resource_uri, selector_set=abandoned.shell._selector_set)
    assert info.value.code == 2150858843


def test_ipv6_loopback(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(host="::1", allow_unencrypted=True)
    assert srv.url("PowerShell") == f"http://[::1]:{srv.port}/PowerShell"
    w = WSMan("::1", port=srv.port, path="PowerShell", ssl=False, auth="basic", encryption="never",
              username=USER, password=PASSWORD)
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabThing")
        assert len(ps.invoke()) == 1


def test_ntlm_over_https_checks_channel_binding(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes], lab_ca: Any, ca_file: Path
) -> None:
    from orchestrator.lab.auth import Authenticator, tls_server_end_point

    srv = make_server(auth=("negotiate",), tls=server_cert)
    # Expect the binding of another certificate: what a client behind a TLS-intercepting proxy sends.
    other_cert, _ = lab_ca.issue_server_cert(["elsewhere.lab.local"])
    srv.auth = Authenticator({USER: PASSWORD}, ("negotiate",), tls=True,
                             channel_binding=tls_server_end_point(other_cert))
    w = wsman_for(srv, auth="ntlm", ssl=True, cert_validation=str(ca_file))
    with pytest.raises(AuthenticationError):
        RunspacePool(w, configuration_name="Microsoft.Exchange").open()


def test_stop_with_a_receive_waiting(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(allow_unencrypted=True)
    pool = RunspacePool(wsman_for(srv, operation_timeout=20, read_timeout=30), configuration_name="Microsoft.Exchange")
    pool.open()
    ps = PowerShell(pool)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 3)
    outcome: list[str] = []

    def invoke() -> None:
        try:
            ps.invoke()
            outcome.append("returned")
        except Exception as exc:  # noqa: BLE001 - the point is which error the client sees
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=invoke)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    t.join(5)
    assert outcome == ["ConnectionError"]
