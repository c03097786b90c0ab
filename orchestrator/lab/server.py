"""`LabServer`: one emulated Windows/Exchange WinRM endpoint on 127.0.0.1.

Layers, outside in: httpserver (sockets, TLS, keep-alive) -> auth (Basic / Negotiate + WinRM
message encryption) -> fault plan and latency hooks -> wsman (envelopes) -> shells
(psrp_shell for PowerShell configurations, winrs_shell for cmd) -> engine/registry.
Every request ends up in the request log.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from orchestrator.lab import wsman
from orchestrator.lab.auth import (
    SOAP_CONTENT_TYPE,
    Authenticator,
    AuthResult,
    ConnectionAuth,
    KerberosKeys,
    tls_server_end_point,
    wrap,
)
from orchestrator.lab.costs import NO_COSTS, UNLIMITED, LabCosts, LabLimits
from orchestrator.lab.engine import LanguageMode
from orchestrator.lab.faults import FaultKind, FaultPlan, FaultRule
from orchestrator.lab.httpserver import (
    HttpRequest,
    HttpResponse,
    LabHTTPServer,
    ServerThread,
    require_loopback,
)
from orchestrator.lab.psrp_shell import PsrpShell, ShellClosed
from orchestrator.lab.registry import Registry
from orchestrator.lab.requestlog import RequestLog, RequestRecord
from orchestrator.lab.winrs_shell import WinrsShell

MAX_OPERATION_TIMEOUT = 60.0  # bound on how long a Receive may be held open
DEFAULT_OPERATION_TIMEOUT = 20.0
DEFAULT_ENVELOPE = 153600


@dataclass(frozen=True)
class Endpoint:
    """A PowerShell session configuration a server offers, and where.

    `powershell` is the Windows PowerShell version behind the endpoint: it decides the PSRP protocol
    version the pool advertises (2.0 -> 2.1, 3.0/4.0 -> 2.2, 5.1 -> 2.3) and so what the client may
    send (several statements in one pipeline need 2.2). A bare LabServer speaks 2.3 as psrpcore does;
    the emulated Exchange servers (LabSite) take theirs from LabSettings, PowerShell 2.0 by default."""

    configuration: str
    path: str
    language: LanguageMode
    powershell: str = "5.1"


EXCHANGE = Endpoint("Microsoft.Exchange", "/PowerShell", LanguageMode.NO_LANGUAGE)
POWERSHELL = Endpoint("Microsoft.PowerShell", "/wsman", LanguageMode.FULL)
KNOWN_ENDPOINTS = {e.configuration.lower(): e for e in (EXCHANGE, POWERSHELL)}


def _endpoints(configs: Iterable[str | Endpoint]) -> list[Endpoint]:
    out = []
    for c in configs:
        if isinstance(c, Endpoint):
            out.append(c)
        elif c.lower() in KNOWN_ENDPOINTS:
            out.append(KNOWN_ENDPOINTS[c.lower()])
        else:
            raise ValueError(f"unknown configuration {c!r}; pass an Endpoint for custom ones")
    return out


@dataclass
class _ShellMeta:
    """What WinRM knows about a shell besides the shell itself (Get, Enumerate, idle expiry)."""

    resource_uri: str
    streams: tuple[str, str]
    idle_timeout: float
    created: float
    disconnected: bool = False


def _version(powershell: str) -> tuple[int, int]:
    major, _, minor = powershell.partition(".")
    return int(major), int(minor or 0)


def _norm_path(path: str) -> str:
    return "/" + path.split("?", 1)[0].strip("/").lower()


class LabServer:
    """A lab WinRM server.

    Args:
        name: machine name shown in faults and as the shell owner's host.
        registry: the commands this server knows.
        users: {username: password} accepted by Basic and NTLM ("DOMAIN\\user" or "user").
        configurations: PowerShell configurations offered ("Microsoft.Exchange" at /PowerShell,
            "Microsoft.PowerShell" at /wsman) or `Endpoint`s.
        auth: schemes offered: "basic", "negotiate" (also accepts "ntlm" tokens, and Kerberos ones
            when `kerberos` is given), "kerberos" (the `Kerberos` scheme; needs `kerberos`).
        kerberos: this server's keytab and realm files (orchestrator/lab/kdc.py): Kerberos accepted.
        kerberos_only: endpoint paths (e.g. "/PowerShell") where NTLM is refused as Exchange 2010's
            IIS-hosted endpoint refuses it; only with `kerberos`.
        costs: server-side work as sleeps (costs.py); here the pool opens, the commands' in the registry.
        limits: quotas per user (costs.py): shells on /wsman and on the Exchange endpoint, concurrent
            operations; refused with WinRM's and Exchange's faults. `peaks` records the highest use.
        tls: an `ssl.SSLContext`, a (cert_pem, key_pem) pair, or None for plain HTTP. With a pair,
            NTLM over HTTPS also checks the client's channel binding token against the certificate.
        host/port: loopback address; port 0 = any free port.
        latency: seconds added to every request (benchmarks).
        faults: a FaultPlan (settable later through `.faults`).
        allow_unencrypted: WinRM's AllowUnencrypted: Basic over HTTP and plain bodies after
            Negotiate over HTTP are accepted.
        cmd_shell: offer the WinRS cmd shell at /wsman.
        shell_idle_timeout: seconds after which an unused shell is discarded (WinRM's IdleTimeout;
            by default the limits' idle_timeout, 7200 s when unlimited) unless the client asked for another rsp:IdleTimeOut in its Create, so
            clients that drop pools without Delete do not pile up.
    """

    def __init__(
        self,
        name: str,
        registry: Registry,
        users: dict[str, str],
        configurations: Iterable[str | Endpoint] = ("Microsoft.PowerShell",),
        auth: Iterable[str] = ("negotiate", "basic"),
        tls: ssl.SSLContext | tuple[bytes | str, bytes | str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        allow_unencrypted: bool = False,
        cmd_shell: bool = True,
        shell_idle_timeout: float | None = None,
        kerberos: KerberosKeys | None = None,
        kerberos_only: Iterable[str] = (),
        costs: LabCosts = NO_COSTS,
        limits: LabLimits = UNLIMITED,
    ) -> None:
        require_loopback(host)
        self.name = name
        self.registry = registry
        self.endpoints = _endpoints(configurations)
        self.host = host
        self._port = port
        self.latency = latency
        self.faults = faults or FaultPlan()
        self.log = RequestLog()
        self.cmd_shell = cmd_shell
        self.ssl_context = _ssl_context(tls)
        binding = None
        if isinstance(tls, tuple):
            cert_pem = tls[0].encode() if isinstance(tls[0], str) else tls[0]
            binding = tls_server_end_point(cert_pem)
        self.auth = Authenticator(users, tuple(auth), tls=self.ssl_context is not None,
                                  allow_unencrypted=allow_unencrypted, channel_binding=binding,
                                  kerberos=kerberos, kerberos_only=tuple(_norm_path(p) for p in kerberos_only))
        self._shells: dict[str, PsrpShell | WinrsShell] = {}
        self._internal_errors: list[str] = []
        # Every shell's handler failures, kept after the shell is deleted or expires: a lab bug in a shell
        # the client has closed since must still fail the test (`errors`).
        self._shell_errors: list[str] = []
        self._owners: dict[str, str] = {}
        self._last_used: dict[str, float] = {}
        self._meta: dict[str, _ShellMeta] = {}
        self._busy: dict[str, int] = {}  # requests in progress per shell: WinRM counts them as activity
        self.shell_idle_timeout = limits.idle_timeout if shell_idle_timeout is None else shell_idle_timeout
        self.costs = costs
        self.limits = limits
        # Highest use seen per user (benchmarks and tests check that exmig stays within the limits).
        self.peaks: dict[str, int] = {"shells": 0, "exchange_sessions": 0, "operations": 0}
        self.pool_opens: Counter[str] = Counter()  # runspace pools opened, per configuration (benchmarks)
        self._lock = threading.Lock()
        self._http: LabHTTPServer | None = None
        self._bound_port: int | None = None
        self._thread: ServerThread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._http is not None:
            return self
        self._http = LabHTTPServer(self.host, self._port, self, self.ssl_context)
        self._bound_port = int(self._http.server_address[1])
        self._thread = ServerThread(self._http)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
        for shell in shells:
            shell.close()
        self.auth.close()
        if self._http is not None:
            self._internal_errors.extend(self._http.errors)  # `errors` still tells after the stop
        self._http = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("server not started")
        return int(self._http.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def url(self, path: str = "wsman") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        # A request still in flight while the server stops is answered with the port it came in on.
        port = self.port if self._http is not None else self._bound_port
        if port is None:
            raise RuntimeError("server not started")
        return f"{self.scheme}://{host}:{port}/{path.lstrip('/')}"

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions in layers or handlers (tests assert this stays empty)."""
        out = list(self._http.errors) if self._http else []
        out.extend(self._internal_errors)
        out.extend(self._shell_errors)
        return out

    def shell_ids(self) -> list[str]:
        with self._lock:
            return list(self._shells)

    # --- HTTP entry --------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        t0 = time.monotonic()
        seq = self.log.next_seq()
        rule = self.faults.http_request()
        if self.latency:
            time.sleep(self.latency)
        conn = request.connection.state.setdefault("auth", ConnectionAuth())
        if _norm_path(request.path) not in self._paths():
            # No listener registered for this URL: HTTP.sys answers 404 before any authentication.
            self.log.add(RequestRecord(seq=seq, method=request.method, path=request.path, action="", status=404,
                                       bytes_in=len(request.body), bytes_out=0,
                                       duration=time.monotonic() - t0, connection=request.connection.id))
            return HttpResponse(404)
        record = RequestRecord(seq=seq, method=request.method, path=request.path, action="", status=0,
                               bytes_in=len(request.body), bytes_out=0, duration=0.0,
                               connection=request.connection.id)

        def finish(resp: HttpResponse) -> HttpResponse:
            record.status = 0 if resp.reset else resp.status
            record.bytes_out = len(resp.body)
            record.duration = time.monotonic() - t0
            self.log.add(record)
            return resp

        auth = self.auth.authenticate(conn, request.headers, request.body, _norm_path(request.path))
        record.auth = auth.scheme
        record.mechanism = auth.mechanism
        record.encrypted = auth.encrypted
        if auth.status is not None or not auth.body:
            # A handshake leg (401), or the empty POST that completes Negotiate: no WSMan action,
            # but a fault rule by HTTP request number still applies.
            plain = HttpResponse(auth.status or 200, headers=auth.headers)
            if rule is not None:
                pre = self._pre_fault(rule, record, None)
                if pre is not None:
                    return finish(pre)
                if rule.kind is FaultKind.RESET_AFTER:
                    return finish(HttpResponse(0, reset=True))
            return finish(plain)

        if auth.ntlm_refused:
            # Exchange 2010's /PowerShell (IIS, Kerberos only) lets the NTLM handshake through and
            # then answers the WSMan request with HTTP 500 and a SOAP fault without code or text:
            # pypsrp reports "Received a WSManFault message. (No details returned by the server)"
            # (jborean93/pypsrp issue #187; the maintainer: Exchange only really supports Kerberos).
            # The exact body is UNCONFIRMED for 2010; the lab sends the smallest one that yields it.
            record.ntlm_refused = True
            return finish(HttpResponse(500, wsman.empty_fault_envelope(),
                                       auth.headers + [("Content-Type", SOAP_CONTENT_TYPE)]))
        try:
            req = wsman.parse_request(auth.body)
        except wsman.WSManFault as bad:
            return finish(self._reply(auth, wsman.fault_envelope(bad, None, self.name), 500, record, bad))
        record.action = req.short_action
        record.shell_id = req.shell_id
        action_rule = self.faults.wsman_request(req.short_action)
        rule = rule or action_rule
        if rule is not None:
            pre = self._pre_fault(rule, record, req)
            if pre is not None:
                if pre.body and auth.encrypted:
                    return finish(self._reply(auth, pre.body, pre.status, record, None))
                return finish(pre)
        fault: wsman.WSManFault | None = None
        command_id: str | None = None
        try:
            body, command_id = self._dispatch(request, req, auth.username or "")
        except wsman.WSManFault as exc:
            fault = exc
        except Exception as exc:  # noqa: BLE001 - a lab bug: answer with a readable fault, keep it for tests
            import traceback

            self._internal_errors.append(traceback.format_exc())
            fault = wsman.internal_error_fault(f"{type(exc).__name__}: {exc}")
        status = 200
        if fault is not None:
            body, status = wsman.fault_envelope(fault, req.message_id, self.name), 500
        record.command_id = command_id
        if rule is None and fault is None and command_id and req.short_action == "Receive":
            rule = self._completion_rule(req.shell_id, command_id, record)
        if rule is not None and rule.kind is FaultKind.RESET_AFTER:
            return finish(HttpResponse(0, reset=True))
        return finish(self._reply(auth, body, status, record, fault))

    def _completion_rule(self, shell_id: str | None, command_id: str, record: RequestRecord) -> FaultRule | None:
        """A `cmdlet` fault rule for the Receive that just delivered a pipeline's completion."""
        with self._lock:
            shell = self._shells.get(shell_id or "")
        if not isinstance(shell, PsrpShell):
            return None
        cmdlets = shell.delivered_completion(command_id)
        if cmdlets is None:
            return None
        rule = self.faults.pipeline_completed(cmdlets)
        if rule is not None:
            record.fault = rule.kind.value
        return rule

    def _reply(self, auth: AuthResult, body: bytes, status: int, record: RequestRecord,
               fault: wsman.WSManFault | None) -> HttpResponse:
        if fault is not None:
            record.wsman_fault = fault.code
        if self.winrm_version >= (3, 0):
            body = wsman.with_activity_id(body)
        headers = list(auth.headers)
        if auth.encrypted:
            # The connection's context unwrapped the request; it wraps the reply too.
            ctype, wrapped = wrap(auth.context, body, auth.protocol)
            return HttpResponse(status, wrapped, headers + [("Content-Type", ctype)])
        return HttpResponse(status, body, headers + [("Content-Type", SOAP_CONTENT_TYPE)])

    def _pre_fault(self, rule: FaultRule, record: RequestRecord, req: wsman.WSManRequest | None) -> HttpResponse | None:
        """Apply the part of a fault that happens before executing; None = go on executing."""
        record.fault = rule.kind.value
        if rule.kind is FaultKind.RESET_BEFORE:
            return HttpResponse(0, reset=True)
        if rule.kind is FaultKind.HTTP_500:
            return HttpResponse(500)
        if rule.kind is FaultKind.HTTP_503:
            return HttpResponse(503, headers=[("Retry-After", "1")])
        if rule.kind is FaultKind.OPERATION_TIMEOUT:
            fault = wsman.operation_timeout_fault()
            record.wsman_fault = fault.code
            return HttpResponse(500, wsman.fault_envelope(fault, req.message_id if req else None, self.name),
                                [("Content-Type", SOAP_CONTENT_TYPE)])
        if rule.kind is FaultKind.STALL:
            time.sleep(max(0.0, min(rule.seconds, MAX_OPERATION_TIMEOUT)))
        return None

    # --- WSMan dispatch ----------------------------------------------------------------------

    def _paths(self) -> set[str]:
        paths = {_norm_path(e.path) for e in self.endpoints}
        if self.cmd_shell:
            paths.add("/wsman")
        return paths

    def _endpoint_for(self, path: str, resource_uri: str) -> Endpoint | None:
        if not resource_uri.lower().startswith(wsman.PS_RESOURCE_PREFIX.lower()):
            return None
        conf = resource_uri[len(wsman.PS_RESOURCE_PREFIX):]
        for ep in self.endpoints:
            if ep.configuration.lower() == conf.lower() and _norm_path(ep.path) == path:
                return ep
        return None

    @property
    def winrm_version(self) -> tuple[int, int]:
        """The machine's WinRM: 2.0 with Windows PowerShell 2.0, 3.0 with WMF 3.0 and later. It comes with the
        newest PowerShell the machine has, i.e. the highest of its endpoints."""
        newest = max((_version(e.powershell) for e in self.endpoints), default=(2, 0))
        return (2, 0) if newest < (3, 0) else (3, 0)

    def _dispatch(self, http: HttpRequest, req: wsman.WSManRequest, user: str) -> tuple[bytes, str | None]:
        path = _norm_path(http.path)
        if req.operation_timeout_text and (req.operation_timeout is None or req.operation_timeout < 0):
            raise wsman.invalid_timeout_fault(req.operation_timeout_text)
        try:
            action = wsman.Action(req.action)
        except ValueError:
            raise wsman.action_not_supported_fault(req.action) from None
        self._expire_idle_shells()
        if action is wsman.Action.CREATE:
            return self._create(http, req, path, user), None
        if action is wsman.Action.ENUMERATE:
            return self._enumerate(req, user), None
        shell_id = req.shell_id
        if not shell_id:
            raise wsman.invalid_selectors_fault()
        sid = shell_id.upper()
        with self._lock:
            shell = self._shells.get(sid)
            owner = self._owners.get(sid)
            meta = self._meta.get(sid)
            if shell is not None:
                operations = 1 + sum(n for other, n in self._busy.items()
                                     if (self._owners.get(other) or "").lower() == user.lower())
                self.peaks["operations"] = max(self.peaks["operations"], operations)
                limit = self.limits.max_operations_per_user
                if limit is not None and operations > limit:
                    raise wsman.operations_quota_fault(limit)
                self._last_used[sid] = time.monotonic()
                self._busy[sid] = self._busy.get(sid, 0) + 1
        try:
            return self._on_shell(req, action, shell_id, shell, owner, meta, user)
        finally:
            with self._lock:
                if shell is not None and sid in self._busy:
                    self._busy[sid] -= 1
                    if not self._busy[sid]:
                        del self._busy[sid]
                if sid in self._last_used:
                    self._last_used[sid] = time.monotonic()

    def _on_shell(self, req: wsman.WSManRequest, action: wsman.Action, shell_id: str,
                  shell: PsrpShell | WinrsShell | None, owner: str | None, meta: _ShellMeta | None,
                  user: str) -> tuple[bytes, str | None]:
        sid = shell_id.upper()
        if shell is None or meta is None:
            if action is wsman.Action.GET:
                raise wsman.shell_get_not_found_fault()
            raise wsman.shell_not_found_fault(shell_id)
        if owner is not None and owner.lower() != user.lower():
            raise wsman.access_denied_fault()
        try:
            if action is wsman.Action.DELETE:
                self._drop_shell(sid)
                shell.close()
                return wsman.response(req), None
            if action is wsman.Action.GET:
                return wsman.response(req, wsman.shell_description(self._shell_info(sid))), None
            if action in (wsman.Action.DISCONNECT, wsman.Action.RECONNECT, wsman.Action.CONNECT):
                return self._disconnection(req, action, shell, meta), None
            if meta.disconnected:
                raise wsman.shell_disconnected_fault(shell_id)
            if isinstance(shell, PsrpShell):
                return self._psrp(shell, req, action)
            return self._winrs(shell, req, action)
        except ShellClosed:
            raise wsman.shell_not_found_fault(shell_id) from None

    def _drop_shell(self, shell_id: str) -> None:
        with self._lock:
            self._shells.pop(shell_id, None)
            self._owners.pop(shell_id, None)
            self._last_used.pop(shell_id, None)
            self._meta.pop(shell_id, None)

    def _shell_info(self, shell_id: str) -> wsman.ShellInfo:
        now = time.monotonic()
        with self._lock:
            meta = self._meta[shell_id]
            return wsman.ShellInfo(
                shell_id, meta.resource_uri, self._owners.get(shell_id, ""), meta.streams[0], meta.streams[1],
                idle_timeout=meta.idle_timeout, state="Disconnected" if meta.disconnected else "Connected",
                run_time=now - meta.created, inactivity=now - self._last_used.get(shell_id, now),
            )

    def _enumerate(self, req: wsman.WSManRequest, user: str) -> bytes:
        """WS-Enumeration of the user's shells or of one shell's commands, answered whole as WinRM answers an
        OptimizeEnumeration with MaxElements (test_psrp_disconnect_runspaces.yml, test_psrp_disconnected_commands.yml)."""
        uri = req.resource_uri.lower()
        with self._lock:
            mine = [sid for sid, owner in self._owners.items() if owner.lower() == user.lower() and sid in self._meta]
        if uri == wsman.SHELLS_RESOURCE_URI.lower():
            items = [wsman.shell_description(self._shell_info(sid)) for sid in mine]
            return wsman.response(req, wsman.enumerate_response(items))
        if uri == wsman.COMMANDS_RESOURCE_URI.lower():
            wanted = {el.get("Name", "").lower(): (el.text or "").strip().upper() for el in
                      wsman.findall(req.body, "w:Filter/w:SelectorSet/w:Selector")}
            target = wanted.get("shellid", "")
            with self._lock:
                shell = self._shells.get(target) if target in mine else None
            if shell is None:
                raise wsman.shell_get_not_found_fault()
            items = [wsman.command_item(cid, state) for cid, state in shell.commands()]
            return wsman.response(req, wsman.enumerate_response(items))
        raise wsman.unknown_resource_fault(req.resource_uri)

    def _disconnection(self, req: wsman.WSManRequest, action: wsman.Action, shell: PsrpShell | WinrsShell,
                       meta: _ShellMeta) -> bytes:
        """Disconnect/Reconnect/Connect came with WinRM 3.0 (WMF 3.0, PowerShell 3.0): WinRM 2.0 does not know
        the actions and refuses them as unsupported. On 3.0+ the lab supports them for PowerShell shells:
        Disconnect and Reconnect by the same client, Connect by a new client (connectXml negotiation, or a
        command's CommandId); a cmd shell's are refused with the same fault (lab limit, UNCONFIRMED)."""
        if self.winrm_version < (3, 0) or not isinstance(shell, PsrpShell):
            raise wsman.action_not_supported_fault(req.action)
        if action is wsman.Action.CONNECT:
            command_id = req.body.get("CommandId") if req.body is not None else None
            if command_id:
                if not shell.has_command(command_id):
                    raise wsman.command_not_found_fault()
                return wsman.response(req, wsman.connect_response(None))
            xml = wsman.find(req.body, "creationXml:connectXml")
            if xml is None or not (xml.text or "").strip():
                raise wsman.invalid_message_fault("Connect without connectXml")
            if not meta.disconnected:
                raise wsman.shell_connected_fault(shell.shell_id)
            answer = shell.connect(xml.text or "")
            with self._lock:
                meta.disconnected = False
            return wsman.response(req, wsman.connect_response(base64.b64encode(answer).decode()))
        with self._lock:
            meta.disconnected = action is wsman.Action.DISCONNECT
        return wsman.response(req)

    def _check_shell_quota(self, user: str, resource_uri: str) -> None:
        """WinRM's MaxShellsPerUser over the shells it hosts; Exchange's throttling over its IIS-hosted ones."""
        exchange = resource_uri.lower().endswith("/microsoft.exchange")
        with self._lock:
            count = 1 + sum(1 for sid, owner in self._owners.items() if owner.lower() == user.lower()
                            and sid in self._meta
                            and self._meta[sid].resource_uri.lower().endswith("/microsoft.exchange") == exchange)
        key = "exchange_sessions" if exchange else "shells"
        self.peaks[key] = max(self.peaks[key], count)
        limit = self.limits.exchange_max_sessions if exchange else self.limits.max_shells_per_user
        if limit is not None and count > limit:
            raise wsman.exchange_sessions_quota_fault(limit) if exchange else wsman.shells_quota_fault(limit)

    def _create(self, http: HttpRequest, req: wsman.WSManRequest, path: str, user: str) -> bytes:
        body = req.body
        self._check_shell_quota(user, req.resource_uri)
        if req.resource_uri.lower() == wsman.CMD_RESOURCE_URI.lower():
            if not (self.cmd_shell and path == "/wsman"):
                raise wsman.unknown_resource_fault(req.resource_uri)
            shell_id = str(uuid.uuid4()).upper()
            shell: PsrpShell | WinrsShell = WinrsShell(shell_id, self.registry, user,
                                                       codepage=req.options.get("WINRS_CODEPAGE"))
            streams = ("stdin", "stdout stderr")
        else:
            ep = self._endpoint_for(path, req.resource_uri)
            if ep is None:
                raise wsman.unknown_resource_fault(req.resource_uri)
            creation = wsman.find(body, "creationXml:creationXml")
            if creation is None or not (creation.text or "").strip():
                raise wsman.invalid_message_fault("PowerShell shell Create without creationXml")
            # pypsrp names the shell after its RunspacePool id; keep it.
            shell_id = (body.get("ShellId") if body is not None else None) or str(uuid.uuid4())
            shell_id = shell_id.upper()
            shell = PsrpShell(shell_id, ep.configuration, self.registry, user, ep.language, ep.powershell)
            shell.create(creation.text or "")
            # Opening the runspace is the server's work (Exchange builds the user's cmdlets and RBAC scope).
            self.pool_opens[ep.configuration] += 1
            pause = self.costs.pool_open(ep.configuration)
            if pause:
                time.sleep(pause)
            streams = ("stdin pr", "stdout")
        # The requested rsp:IdleTimeOut is kept and echoed (PT60S -> PT60.000S, as in
        # test_psrp_is_alive_state_disconnected.yml); without one the service's IdleTimeout applies.
        idle_el = wsman.find(body, "rsp:IdleTimeOut")
        idle = wsman.parse_duration(idle_el.text) if idle_el is not None else None
        idle_timeout = min(idle, wsman.MAX_IDLE_TIMEOUT) if idle is not None else self.shell_idle_timeout
        now = time.monotonic()
        shell.worker_errors = self._shell_errors
        with self._lock:
            self._shells[shell_id] = shell
            self._owners[shell_id] = user
            self._last_used[shell_id] = now
            self._meta[shell_id] = _ShellMeta(req.resource_uri, streams, idle_timeout, now)
        address = self.url(http.path)
        return wsman.response(
            req, *wsman.shell_created(address, req.resource_uri, shell_id, user, streams[0], streams[1],
                                      idle_timeout,
                                      # The recorded PowerShell 2.0 host leaves its PowerShell shells undescribed;
                                      # cmd shells are described in every WinRS recording (test_winrs_standard.yml).
                                      describe_shell=isinstance(shell, WinrsShell) or self.winrm_version >= (3, 0))
        )

    def _expire_idle_shells(self) -> None:
        """Discard shells unused for longer than their idle timeout (checked on every request)."""
        now = time.monotonic()
        with self._lock:
            idle = [sid for sid, t in self._last_used.items() if sid not in self._busy
                    and now - t > (self._meta[sid].idle_timeout if sid in self._meta else self.shell_idle_timeout)]
        for sid in idle:
            with self._lock:
                shell = self._shells.get(sid)
            self._drop_shell(sid)
            if shell is not None:
                shell.close()

    def _timeout(self, req: wsman.WSManRequest) -> float:
        t = req.operation_timeout if req.operation_timeout is not None else DEFAULT_OPERATION_TIMEOUT
        return min(t, MAX_OPERATION_TIMEOUT)

    def _psrp(self, shell: PsrpShell, req: wsman.WSManRequest, action: wsman.Action) -> tuple[bytes, str | None]:
        body = req.body
        command_id: str | None
        if action is wsman.Action.COMMAND:
            line = body
            if line is None or line.tag != f"{{{wsman.SHELL_NS}}}CommandLine":
                raise wsman.invalid_message_fault("Command without rsp:CommandLine")
            command_id = line.get("CommandId") or str(uuid.uuid4()).upper()
            try:
                uuid.UUID(command_id)
            except ValueError:
                raise wsman.invalid_message_fault(f"CommandId {command_id!r} is not a GUID") from None
            args = wsman.find(line, "rsp:Arguments")
            shell.command(command_id, args.text if args is not None else None)
            return wsman.response(req, wsman.command_response(command_id)), command_id
        if action is wsman.Action.SEND:
            command_id = None
            data = b""
            for st in wsman.findall(body, "rsp:Stream"):
                command_id = st.get("CommandId") or command_id
                if st.get("Name", "stdin") == "stdin" or st.get("Name") == "pr":
                    data += base64.b64decode(st.text or "")
            if command_id and not shell.has_command(command_id):
                raise wsman.command_not_found_fault()
            shell.send(command_id, data)
            return wsman.response(req, wsman.send_response()), command_id
        if action is wsman.Action.RECEIVE:
            desired = wsman.find(body, "rsp:DesiredStream")
            command_id = desired.get("CommandId") if desired is not None else None
            if command_id and not shell.has_command(command_id):
                raise wsman.command_not_found_fault()
            envelope = req.max_envelope_size or DEFAULT_ENVELOPE
            max_bytes = max(4096, (envelope - 2048) * 3 // 4)
            got = shell.receive(command_id, self._timeout(req), max_bytes)
            if got is None:
                raise wsman.operation_timeout_fault()
            chunks, done = got
            streams = [wsman.StreamChunk("stdout", c, command_id) for c in chunks]
            state = wsman.COMMAND_STATE_DONE if done else None
            return wsman.response(req, wsman.receive_response(streams, command_id, state)), command_id
        if action is wsman.Action.SIGNAL:
            sig = body
            command_id = sig.get("CommandId") if sig is not None else None
            code_el = wsman.find(sig, "rsp:Code")
            shell.signal(command_id, (code_el.text or "") if code_el is not None else "")
            return wsman.response(req, wsman.signal_response()), command_id
        raise wsman.action_not_supported_fault(req.action)

    def _winrs(self, shell: WinrsShell, req: wsman.WSManRequest, action: wsman.Action) -> tuple[bytes, str | None]:
        body = req.body
        command_id: str | None
        if action is wsman.Action.COMMAND:
            program_el = wsman.find(body, "rsp:Command")
            program = (program_el.text or "").strip() if program_el is not None else ""
            args = [a.text or "" for a in wsman.findall(body, "rsp:Arguments")]
            command_id = shell.command(program, args)
            return wsman.response(req, wsman.command_response(command_id)), command_id
        if action is wsman.Action.SEND:
            command_id = None
            for st in wsman.findall(body, "rsp:Stream"):
                command_id = st.get("CommandId") or command_id
                if command_id and not shell.has_command(command_id):
                    raise wsman.command_not_found_fault()
                if command_id:
                    shell.send(command_id, base64.b64decode(st.text or ""))
            return wsman.response(req, wsman.send_response()), command_id
        if action is wsman.Action.RECEIVE:
            desired = wsman.find(body, "rsp:DesiredStream")
            command_id = desired.get("CommandId") if desired is not None else None
            if not command_id:
                raise wsman.invalid_parameter_fault()
            if not shell.has_command(command_id):
                raise wsman.command_not_found_fault()
            got = shell.receive(command_id, self._timeout(req))
            if got is None:
                raise wsman.operation_timeout_fault()
            out, err, code = got
            done = code is not None
            streams = [
                wsman.StreamChunk("stdout", out, command_id, end=done),
                wsman.StreamChunk("stderr", err, command_id, end=done),
            ]
            state = wsman.COMMAND_STATE_DONE if done else wsman.COMMAND_STATE_RUNNING
            return wsman.response(req, wsman.receive_response(streams, command_id, state, code)), command_id
        if action is wsman.Action.SIGNAL:
            command_id = body.get("CommandId") if body is not None else None
            code_el = wsman.find(body, "rsp:Code")
            if command_id:
                shell.signal(command_id, (code_el.text or "") if code_el is not None else "")
            return wsman.response(req, wsman.signal_response()), command_id
        raise wsman.action_not_supported_fault(req.action)


def _ssl_context(tls: ssl.SSLContext | tuple[bytes | str, bytes | str] | None) -> ssl.SSLContext | None:
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    cert_pem, key_pem = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain needs files; write them 0600 to a private temp dir and remove at once.
    with tempfile.TemporaryDirectory(prefix="exmig-lab-tls-") as d:
        cert_path = os.path.join(d, "cert.pem")
        key_path = os.path.join(d, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
