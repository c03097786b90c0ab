"""WS-Management (MS-WSMV) envelopes: parse a request, build responses and faults.

Pure functions over bytes and ElementTree; no sockets, no shells. Clients parse by
namespace, so prefixes are cosmetic, but we keep the ones Windows uses to make captured
traffic easy to compare.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "creationXml": "http://schemas.microsoft.com/powershell",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
SHELL_NS = NS["rsp"]
CMD_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
COMMAND_STATE_DONE = SHELL_NS + "/CommandState/Done"
COMMAND_STATE_RUNNING = SHELL_NS + "/CommandState/Running"
# The resource URIs WS-Transfer Get and WS-Enumeration address shells and commands by (pypsrp's
# is_alive and get_runspace_pools use these, whatever the shell's own resource URI).
SHELLS_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
COMMANDS_RESOURCE_URI = SHELLS_RESOURCE_URI + "/Command"
WSMAN_FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ADDRESSING_FAULT_ACTION = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"


class Action(Enum):
    CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
    DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
    COMMAND = SHELL_NS + "/Command"
    SEND = SHELL_NS + "/Send"
    RECEIVE = SHELL_NS + "/Receive"
    SIGNAL = SHELL_NS + "/Signal"
    GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
    ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
    # WinRM 3.0 (Windows Management Framework 3.0) added these three with PowerShell 3.0.
    DISCONNECT = SHELL_NS + "/Disconnect"
    RECONNECT = SHELL_NS + "/Reconnect"
    CONNECT = SHELL_NS + "/Connect"

    @property
    def short(self) -> str:
        return self.name.capitalize()


def short_action(action_uri: str) -> str:
    """'Create', 'Receive', ... for a known action URI; the last path segment otherwise."""
    for a in Action:
        if a.value == action_uri:
            return a.short
    return action_uri.rstrip("/").rsplit("/", 1)[-1] or "(none)"


# WSManFault codes Windows uses (winerror.h ERROR_WSMAN_*), as the clients read them.
CODE_ACCESS_DENIED = 5
CODE_OPERATION_TIMEOUT = 2150858793  # 0x80338029
CODE_INVALID_RESOURCE_URI = 2150858811  # 0x8033803B
CODE_INVALID_SELECTORS = 2150858813  # 0x8033803D
CODE_SHELL_NOT_FOUND = 2150858843  # 0x8033805B
CODE_ACTION_NOT_SUPPORTED = 2150858771  # 0x80338013
CODE_INVALID_MESSAGE = 2150858817  # 0x80338041 (schema validation / malformed body)
CODE_INVALID_HEADER = 2150858767  # 0x8033800F ERROR_WSMAN_INVALID_MESSAGE_INFORMATION_HEADER
CODE_INVALID_PARAMETER = 87  # Win32 ERROR_INVALID_PARAMETER, as plugins report it
# Lab-only code (not a Windows value): a bug in a lab layer, so tests and users can tell it apart.
CODE_INTERNAL_ERROR = 2150859263  # 0x803381FF


@dataclass(frozen=True)
class ProviderFault:
    """f:Message/f:ProviderFault: the plugin that failed, with either its text or a nested WSManFault."""

    provider: str
    path: str
    text: str | None = None
    nested_code: int | None = None  # nest <f:WSManFault Code=...><f:Message>nested_message</f:Message>
    nested_message: str | None = None


@dataclass
class WSManFault(Exception):
    """A SOAP fault as WinRM sends it: HTTP 500, s:Code/Subcode, f:WSManFault@Code.

    `message` is f:Message (and s:Reason/s:Text unless `reason` differs, as for invalid headers);
    `fault_detail` is the w:FaultDetail URI; `provider` replaces the f:Message text with a
    f:ProviderFault (pypsrp then reports s:Reason as the reason and the provider separately)."""

    code: int
    message: str
    subcode: str = "w:InternalError"
    sender: bool = True  # s:Sender vs s:Receiver
    reason: str | None = None
    fault_detail: str | None = None
    provider: ProviderFault | None = None
    action: str = WSMAN_FAULT_ACTION

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")


def operation_timeout_fault() -> WSManFault:
    return WSManFault(
        CODE_OPERATION_TIMEOUT,
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.  ",
        subcode="w:TimedOut",
        sender=False,
    )


def shell_not_found_fault(shell_id: str | None) -> WSManFault:
    return WSManFault(
        CODE_SHELL_NOT_FOUND,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was "
        "not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
        "longer exists on the server. Provide the correct ShellId or create a new shell and try again. ",
        subcode="w:InvalidSelectors",
    )


def invalid_selectors_fault() -> WSManFault:
    return WSManFault(
        CODE_INVALID_SELECTORS,
        "The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource. ",
        subcode="w:InvalidSelectors",
    )


def unknown_resource_fault(resource_uri: str) -> WSManFault:
    # Text as a real WinRM listener answers a configuration it does not host (reference §4.3).
    return WSManFault(
        CODE_INVALID_RESOURCE_URI,
        f"The resource URI ({resource_uri}) was not found in the WS-Management catalog.",
        subcode="w:DestinationUnreachable",
    )


def access_denied_fault() -> WSManFault:
    return WSManFault(CODE_ACCESS_DENIED, "Access is denied. ", subcode="w:AccessDenied")


def action_not_supported_fault(action: str) -> WSManFault:
    # ERROR_WSMAN_ACTION_NOT_SUPPORTED 0x80338013, its MessageText and "wsa, code=Sender, subcode=WS-Addressing
    # ActionNotsupported" as winerror.h's WinRM section gives them (no pypsrp recording has this fault). WinRM 2.0
    # answers the PowerShell 3.0 actions (Disconnect, Reconnect, Connect) so.
    return WSManFault(
        CODE_ACTION_NOT_SUPPORTED,
        "The WS-Management service does not support the action specified in the request. ",
        subcode="a:ActionNotSupported",
        action=ADDRESSING_FAULT_ACTION,
    )


CODE_QUOTA_LIMIT = 2150859173  # ERROR_WSMAN_QUOTA_MAX_SHELLS (0x803381A5)


def _quota_fault(message: str, reason: str | None = None) -> WSManFault:
    return WSManFault(CODE_QUOTA_LIMIT, message, subcode="w:QuotaLimit", reason=reason)


def shells_quota_fault(limit: int) -> WSManFault:
    """WinRM's MaxShellsPerUser refusal of a Create: subcode w:QuotaLimit (MS-WSMV 3.1.4.5.2.1), code and texts as
    a WinRM 2.0 server sends them (the fault quoted in the Cerebrum project's WinRM client; the f:Message also in
    the PowerShell team's "Configuring WSMAN Limits", 2010)."""
    return _quota_fault(
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
        "concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. ",
        reason="The WS-Management service cannot process the request. The maximum number of concurrent shells for "
               "this user has been exceeded. Close existing shells or raise the quota for this user. ")


def exchange_sessions_quota_fault(limit: int) -> WSManFault:
    """Exchange 2010's throttling (PowerShellMaxConcurrency) refusal, text as an Exchange 2010 server shows it
    (quoted at cloudiffic.com); the fault code and subcode around it are UNCONFIRMED (WinRM's quota fault)."""
    return _quota_fault(
        f"The WS-Management service cannot process the request. This user is allowed a maximum of {limit} "
        "concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. ")


def operations_quota_fault(limit: int) -> WSManFault:
    """MaxConcurrentOperationsPerUser exceeded. The text follows the shells fault's pattern: UNCONFIRMED wording."""
    return _quota_fault(
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
        "concurrent operations, which has been exceeded. Close existing operations for this user, or raise the "
        "quota for this user. ")


def internal_error_fault(detail: str) -> WSManFault:
    return WSManFault(
        CODE_INTERNAL_ERROR,
        f"The lab WS-Management service failed while processing the request: {detail}",
        subcode="w:InternalError",
        sender=False,
    )


def invalid_message_fault(detail: str) -> WSManFault:
    return WSManFault(
        CODE_INVALID_MESSAGE,
        f"The WS-Management service cannot process the request because the XML is invalid: {detail}",
        subcode="w:SchemaValidationError",
    )



_UNEXPECTED_SELECTORS = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"
_INVALID_SELECTORS_TEXT = (
    "The WS-Management service cannot process the request because the request contained invalid selectors for "
    "the resource. "
)


def command_not_found_fault() -> WSManFault:
    """Receive/Send/Signal naming a CommandId the shell does not have (ERROR_WINRS_... 0x8033805B).

    Reason, FaultDetail and Message as in pypsrp's recordings test_psrp_receive_failure.yml (PSRP shell)
    and test_winrs_bad_cmd_id.yml (cmd shell)."""
    return WSManFault(
        CODE_SHELL_NOT_FOUND,
        "The Windows Remote Shell received a request to perform an operation on a command identifier that does "
        "not exist. Either the command has completed execution or the client specified an invalid command "
        "identifier. ",
        subcode="w:InvalidSelectors",
        reason=_INVALID_SELECTORS_TEXT,
        fault_detail=_UNEXPECTED_SELECTORS,
    )


def shell_get_not_found_fault() -> WSManFault:
    """WS-Transfer Get of a shell that is gone: the Shell provider's nested fault, code 0x8033805B
    (pypsrp's recording test_psrp_is_alive_invalid_selectors.yml; pypsrp's is_alive reads it as closed)."""
    return WSManFault(
        CODE_SHELL_NOT_FOUND,
        _INVALID_SELECTORS_TEXT,
        subcode="w:InvalidSelectors",
        fault_detail=_UNEXPECTED_SELECTORS,
        provider=ProviderFault("Shell provider", "%systemroot%\\system32\\WsmSvc.dll",
                               nested_code=CODE_SHELL_NOT_FOUND, nested_message=_INVALID_SELECTORS_TEXT),
    )


def invalid_parameter_fault() -> WSManFault:
    """Win32 87 from the cmd shell plugin, e.g. a cmd-shell Receive without CommandId
    (pypsrp's recording test_winrs_fail_poll_process.yml)."""
    return WSManFault(
        CODE_INVALID_PARAMETER,
        "The parameter is incorrect. ",
        subcode="w:InvalidParameter",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue",
        provider=ProviderFault("Shell cmd plugin", "%systemroot%\\system32\\winrscmd.dll",
                               text="The parameter is incorrect. "),
    )


def invalid_timeout_fault(value: str) -> WSManFault:
    """An OperationTimeout WinRM cannot read, e.g. PT-1S: ERROR_WSMAN_INVALID_MESSAGE_INFORMATION_HEADER
    (0x8033800F) on the addressing fault action (pypsrp's recording test_psrp_is_alive_other_wsman_error.yml)."""
    return WSManFault(
        CODE_INVALID_HEADER,
        f"The WS-Management service cannot process the request. The XML contains an invalid timeout field in the "
        f"SOAP header: {value}. ",
        subcode="a:InvalidMessageInformationHeader",
        reason="The WS-Management service cannot process the request. The request contains one or more invalid "
        "SOAP headers. ",
        action=ADDRESSING_FAULT_ACTION,
    )


def shell_disconnected_fault(shell_id: str) -> WSManFault:
    # Lab wording (UNCONFIRMED text): a request other than Reconnect/Connect/Get/Delete on a
    # disconnected shell. Code ERROR_WSMAN_SERVICE_STREAM_DISCONNECTED is not in the recordings.
    return WSManFault(
        CODE_INVALID_SELECTORS,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell is "
        "disconnected. Reconnect to the shell and try again. ",
        subcode="w:InvalidSelectors",
    )



def shell_connected_fault(shell_id: str) -> WSManFault:
    # Lab wording (UNCONFIRMED text and code): a new client's Connect to a shell another client holds.
    return WSManFault(
        CODE_INVALID_SELECTORS,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell is connected "
        "to another client. Disconnect it first and try again. ",
        subcode="w:InvalidSelectors",
    )

@dataclass
class WSManRequest:
    action: str
    message_id: str
    resource_uri: str
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    operation_timeout: float | None = None
    operation_timeout_text: str = ""  # as sent, so an unreadable value can be refused
    max_envelope_size: int | None = None
    body: ET.Element | None = None  # the first child of s:Body, if any

    @property
    def short_action(self) -> str:
        return short_action(self.action)

    @property
    def shell_id(self) -> str | None:
        for key, value in self.selectors.items():
            if key.lower() == "shellid":
                return value
        return None


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str | None) -> float | None:
    """xs:duration as WSMan uses it (PT20S, PT60.000S) -> seconds."""
    if not text:
        return None
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = m.groups()
    return (
        int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0.0)
    )


XML_NS = "http://www.w3.org/XML/1998/namespace"


def _q(prefix: str, tag: str) -> str:
    return f"{{{NS[prefix]}}}{tag}"


def parse_request(data: bytes) -> WSManRequest:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise invalid_message_fault(str(exc)) from None
    header = root.find("s:Header", NS)
    if root.tag != _q("s", "Envelope") or header is None:
        raise invalid_message_fault("not a SOAP 1.2 envelope")

    def text(path: str) -> str:
        el = header.find(path, NS)
        return (el.text or "").strip() if el is not None else ""

    selectors = {
        el.get("Name", ""): (el.text or "") for el in header.findall("w:SelectorSet/w:Selector", NS)
    }
    options = {el.get("Name", ""): (el.text or "") for el in header.findall("w:OptionSet/w:Option", NS)}
    max_env = text("w:MaxEnvelopeSize")
    body_el = root.find("s:Body", NS)
    body = body_el[0] if body_el is not None and len(body_el) else None
    return WSManRequest(
        action=text("a:Action"),
        message_id=text("a:MessageID"),
        resource_uri=text("w:ResourceURI"),
        selectors=selectors,
        options=options,
        operation_timeout=parse_duration(text("w:OperationTimeout")),
        operation_timeout_text=text("w:OperationTimeout"),
        max_envelope_size=int(max_env) if max_env.isdigit() else None,
        body=body,
    )


def _envelope(action: str, relates_to: str | None) -> tuple[ET.Element, ET.Element]:
    env = ET.Element(_q("s", "Envelope"))
    # Every envelope of every recorded Windows host carries xml:lang on s:Envelope
    # (jborean93/pypsrp tests/tests_pypsrp/responses/*.yml, e.g. test_psrp_run_protocol_version_2.1.yml).
    env.set(f"{{{XML_NS}}}lang", "en-US")
    header = ET.SubElement(env, _q("s", "Header"))
    ET.SubElement(header, _q("a", "Action")).text = action
    ET.SubElement(header, _q("a", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, _q("a", "To")).text = ANONYMOUS
    if relates_to:
        ET.SubElement(header, _q("a", "RelatesTo")).text = relates_to
    body = ET.SubElement(env, _q("s", "Body"))
    return env, body


def response(request: WSManRequest, *content: ET.Element) -> bytes:
    """A successful reply: `<action>Response`, RelatesTo = the request's MessageID."""
    env, body = _envelope(request.action + "Response", request.message_id)
    for el in content:
        body.append(el)
    return ET.tostring(env, encoding="utf-8", xml_declaration=False)


def fault_envelope(fault: WSManFault, relates_to: str | None, machine: str) -> bytes:
    env, body = _envelope(fault.action, relates_to)
    f = ET.SubElement(body, _q("s", "Fault"))
    code = ET.SubElement(f, _q("s", "Code"))
    ET.SubElement(code, _q("s", "Value")).text = "s:Sender" if fault.sender else "s:Receiver"
    sub = ET.SubElement(code, _q("s", "Subcode"))
    ET.SubElement(sub, _q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(f, _q("s", "Reason"))
    t = ET.SubElement(reason, _q("s", "Text"))
    t.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    t.text = fault.reason or fault.message
    detail = ET.SubElement(f, _q("s", "Detail"))
    if fault.fault_detail:
        ET.SubElement(detail, _q("w", "FaultDetail")).text = fault.fault_detail
    wf = ET.SubElement(detail, _q("f", "WSManFault"), Code=str(fault.code), Machine=machine)
    message = ET.SubElement(wf, _q("f", "Message"))
    pf = fault.provider
    if pf is None:
        message.text = fault.message
    else:
        prov = ET.SubElement(message, _q("f", "ProviderFault"), provider=pf.provider, path=pf.path)
        if pf.nested_code is not None:
            inner = ET.SubElement(prov, _q("f", "WSManFault"), Code=str(pf.nested_code), Machine=machine)
            ET.SubElement(inner, _q("f", "Message")).text = pf.nested_message
        else:
            prov.text = pf.text
    return ET.tostring(env, encoding="utf-8", xml_declaration=False)


# Whatever prefix the addressing namespace has: ElementTree's registry is process-wide, and pypsrp (in the same
# process for rehearsals and tests) registers its own ("wsa").
_MESSAGE_ID_END = re.compile(rb"</[A-Za-z][\w.-]*:MessageID>")


def with_activity_id(body: bytes) -> bytes:
    """The reply with a p:ActivityId after its MessageID, as WinRM 3.0+ hosts send in every response header
    (a bare GUID: pypsrp's recordings of newer hosts, e.g. test_psrp_receive_failure.yml,
    test_psrp_clear_commands.yml). The recorded WinRM 2.0 host sends none (test_psrp_run_protocol_version_2.1.yml)."""
    found = _MESSAGE_ID_END.search(body, 0, 2048)  # in the header, near the start
    if found is None:
        return body
    at = found.end()
    activity = f'<p:ActivityId xmlns:p="{NS["p"]}">{str(uuid.uuid4()).upper()}</p:ActivityId>'.encode()
    return body[:at] + activity + body[at:]


def empty_fault_envelope() -> bytes:
    """A SOAP fault with neither code nor text (what a refusal without details looks like to a client)."""
    env, body = _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", None)
    ET.SubElement(body, _q("s", "Fault"))
    return ET.tostring(env, encoding="utf-8", xml_declaration=False)


# --- body builders -----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """Seconds -> xs:duration the way WinRM writes shell timeouts (PT7200.000S)."""
    return f"PT{seconds:.3f}S"


def format_elapsed(seconds: float) -> str:
    """Seconds -> the P0DT0H1M2S form of rsp:ShellRunTime / rsp:ShellInactivity."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


@dataclass
class ShellInfo:
    """What WinRM reports about a shell (Create response, WS-Transfer Get, WS-Enumeration)."""

    shell_id: str
    resource_uri: str
    owner: str
    input_streams: str
    output_streams: str
    idle_timeout: float = 7200.0
    state: str = "Connected"  # or "Disconnected"
    run_time: float = 0.0
    inactivity: float = 0.0


# WinRM's MaxIdleTimeOut as the recordings show it (test_psrp_is_alive_state_disconnected.yml).
MAX_IDLE_TIMEOUT = 2147483.647


def shell_description(info: ShellInfo, full: bool = True) -> ET.Element:
    """rsp:Shell with the elements WinRM sends; `full` adds what Get/Enumerate add to Create's
    (element order as in test_psrp_is_alive_state_disconnected.yml and test_psrp_disconnect_runspaces.yml)."""
    shell = ET.Element(_q("rsp", "Shell"))

    def add(tag: str, value: str) -> None:
        ET.SubElement(shell, _q("rsp", tag)).text = value

    add("ShellId", info.shell_id)
    add("ResourceUri", info.resource_uri)
    add("Owner", info.owner)
    add("ClientIP", "127.0.0.1")
    add("IdleTimeOut", format_duration(info.idle_timeout))
    add("InputStreams", info.input_streams)
    add("OutputStreams", info.output_streams)
    if full:
        add("MaxIdleTimeOut", format_duration(MAX_IDLE_TIMEOUT))
        add("Locale", "en-US")
        add("DataLocale", "en-US")
        add("CompressionMode", "NoCompression")
        add("ProfileLoaded", "Yes")
        add("Encoding", "UTF8")
        add("BufferMode", "Block")
        add("State", info.state)
    add("ShellRunTime", format_elapsed(info.run_time))
    add("ShellInactivity", format_elapsed(info.inactivity))
    return shell


def shell_created(
    address: str, resource_uri: str, shell_id: str, owner: str, input_streams: str, output_streams: str,
    idle_timeout: float = 7200.0, describe_shell: bool = True,
) -> list[ET.Element]:
    """Create response: ResourceCreated (what both clients need) plus, where the host sends it, the rsp:Shell
    description. A PowerShell 2.0 / WinRM 2.0 host (Windows 2008 R2 SP1, pypsrp's recording
    test_psrp_run_protocol_version_2.1.yml) answers with ResourceCreated alone; later hosts add rsp:Shell
    (test_psrp_is_alive_state_disconnected.yml)."""
    rc = ET.Element(_q("x", "ResourceCreated"))
    ET.SubElement(rc, _q("a", "Address")).text = address
    ref = ET.SubElement(rc, _q("a", "ReferenceParameters"))
    ET.SubElement(ref, _q("w", "ResourceURI")).text = resource_uri
    sel = ET.SubElement(ref, _q("w", "SelectorSet"))
    ET.SubElement(sel, _q("w", "Selector"), Name="ShellId").text = shell_id
    if not describe_shell:
        return [rc]
    info = ShellInfo(shell_id, resource_uri, owner, input_streams, output_streams, idle_timeout)
    return [rc, shell_description(info, full=False)]


def enumerate_response(items: list[ET.Element]) -> ET.Element:
    """An optimized enumeration answered whole: empty context, the items, EndOfSequence
    (test_psrp_disconnect_runspaces.yml)."""
    el = ET.Element(_q("n", "EnumerateResponse"))
    ET.SubElement(el, _q("n", "EnumerationContext"))
    if items:
        box = ET.SubElement(el, _q("w", "Items"))
        box.extend(items)
    ET.SubElement(el, _q("w", "EndOfSequence"))
    return el


def command_item(command_id: str, state: str) -> ET.Element:
    """rsp:Command of a command enumeration (test_psrp_disconnected_commands.yml)."""
    el = ET.Element(_q("rsp", "Command"))
    ET.SubElement(el, _q("rsp", "CommandId")).text = command_id
    ET.SubElement(el, _q("rsp", "CommandLine"))
    ET.SubElement(el, _q("rsp", "CommandState")).text = state
    return el


def connect_response(response_xml_b64: str | None) -> ET.Element:
    """ConnectResponse: the pool's streams and connectResponseXml for a pool, empty for a command
    (test_psrp_disconnected_commands.yml)."""
    el = ET.Element(_q("rsp", "ConnectResponse"))
    if response_xml_b64 is not None:
        ET.SubElement(el, _q("rsp", "InputStreams")).text = "stdin pr"
        ET.SubElement(el, _q("rsp", "OutputStreams")).text = "stdout"
        ET.SubElement(el, _q("creationXml", "connectResponseXml")).text = response_xml_b64
    return el


def command_response(command_id: str) -> ET.Element:
    el = ET.Element(_q("rsp", "CommandResponse"))
    ET.SubElement(el, _q("rsp", "CommandId")).text = command_id
    return el


def send_response() -> ET.Element:
    return ET.Element(_q("rsp", "SendResponse"))


def signal_response() -> ET.Element:
    return ET.Element(_q("rsp", "SignalResponse"))


@dataclass
class StreamChunk:
    name: str  # stdout / stderr
    data: bytes
    command_id: str | None = None
    end: bool = False


def receive_response(
    chunks: list[StreamChunk],
    command_id: str | None = None,
    state: str | None = None,
    exit_code: int | None = None,
) -> ET.Element:
    import base64

    el = ET.Element(_q("rsp", "ReceiveResponse"))
    for chunk in chunks:
        attrs = {"Name": chunk.name}
        if chunk.command_id:
            attrs["CommandId"] = chunk.command_id
        if chunk.end:
            attrs["End"] = "true"
        st = ET.SubElement(el, _q("rsp", "Stream"), attrs)
        st.text = base64.b64encode(chunk.data).decode() if chunk.data else None
    if state is not None and command_id is not None:
        cs = ET.SubElement(el, _q("rsp", "CommandState"), CommandId=command_id, State=state)
        if exit_code is not None:
            ET.SubElement(cs, _q("rsp", "ExitCode")).text = str(exit_code)
    return el


def find(el: ET.Element | None, path: str) -> ET.Element | None:
    return el.find(path, NS) if el is not None else None


def findall(el: ET.Element | None, path: str) -> list[ET.Element]:
    return el.findall(path, NS) if el is not None else []
