"""A PSRP shell (one runspace pool) on top of psrpcore's server classes.

psrpcore is sans-IO and not thread-safe: every call into the pool or its pipelines happens
under this shell's `Condition`. Commands run in a worker thread (never in the HTTP thread),
which takes the lock only to write records. Outgoing data is drained from psrpcore right
after every change and sorted into one queue per target (the pool, or one pipeline id),
because a Receive must only carry data for the CommandId it names (pypsrp concatenates
whatever it gets).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from psrpcore import ServerHostRequestor, ServerPipeline, ServerRunspacePool
from psrpcore._payload import PSRPPayload, StreamType
from psrpcore.types import (
    ChoiceDescription,
    CommandOrigin,
    ErrorCategoryInfo,
    ErrorRecord,
    InvocationInfo,
    NETException,
    PSInvocationState,
    PSList,
    PSObject,
    PSType,
    PSVersion,
    RunspacePoolInitData,
    RunspacePoolState,
    RunspacePoolStateMsg,
    SessionCapability,
)
from psrpcore.types import (
    ErrorCategory as PSErrorCategory,
)

from orchestrator.lab import engine, pslang, serialize
from orchestrator.lab import metadata as command_metadata
from orchestrator.lab.registry import ErrorCategory, LabError, Registry, Session

# Fragment payload size per queued chunk. Each chunk holds whole fragments, so a Receive can
# take any number of chunks without splitting one.
FRAGMENT_SIZE = 32 * 1024
# How long a pipeline Receive waits for a fast pipeline to finish before returning partial
# data (protocol notes §4.5): real WinRM returns at once, which costs a request more.
FAST_PIPELINE_GRACE = 0.05


def fail_pipeline(pipeline: ServerPipeline, record: ErrorRecord) -> None:
    """Move a running pipeline to Failed with its terminating ErrorRecord.

    psrpcore exposes complete() and stop() but nothing for a terminating error; its private
    state change is the one place that emits PIPELINE_STATE with ExceptionAsErrorRecord.
    """
    pipeline._change_state(PSInvocationState.Failed, error=record)


def _exception(err: LabError) -> NETException:
    exc = NETException(Message=err.message, HResult=-2146233087)
    names = [err.exception_type]
    for base in ("System.SystemException", "System.Exception", "System.Object"):
        if base not in names:
            names.append(base)
    exc.PSObject.type_names = names
    return exc


class _CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose text is PowerShell's: "Category: (Target:Type) [Activity], Reason", with the colon
    after the category ("NotSpecified: (:) [Write-Error], WriteErrorException" in pypsrp's recording
    test_psrp_error_failed.yml; psrpcore writes it without the colon)."""

    def __str__(self) -> str:
        return (f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
                f"[{self.Activity or ''}], {self.Reason or ''}")


def _category(err: LabError) -> ErrorCategoryInfo:
    reason = err.exception_type.rsplit(".", 1)[-1]
    target_name = "" if err.target is None else str(err.target)
    target_type = "" if err.target is None else {str: "String", int: "Int32", bool: "Boolean"}.get(
        type(err.target), type(err.target).__name__
    )
    return _CategoryInfo(
        Category=PSErrorCategory(err.category.value),
        Activity=err.activity or "",
        Reason=reason,
        TargetName=target_name,
        TargetType=target_type,
    )


def _target(err: LabError) -> Any:
    try:
        return serialize.to_ps(err.target)
    except TypeError:
        return str(err.target)


def _invocation(err: LabError) -> InvocationInfo | None:
    """Where the error arose, as a real server fills InvocationInfo for a cmdlet run through AddCommand: the
    command's name, no script line or position (the recording test_psrp_error_failed.yml shows the script
    case; for a command the Line and PositionMessage are empty and it is the pipeline's only element)."""
    if not err.activity:
        return None
    return InvocationInfo(
        MyCommand=err.activity, BoundParameters={}, UnboundArguments=[], ScriptLineNumber=0, OffsetInLine=0,
        HistoryId=1, ScriptName="", Line="", PositionMessage="", PSScriptRoot="", PSCommandPath=None,
        InvocationName=err.activity, PipelineLength=1, PipelinePosition=1, ExpectingInput=False,
        CommandOrigin=CommandOrigin.Runspace, DisplayScriptPosition=None,
    )


def error_record(err: LabError) -> ErrorRecord:
    return ErrorRecord(
        Exception=_exception(err),
        CategoryInfo=_category(err),
        TargetObject=_target(err),
        FullyQualifiedErrorId=err.error_id,
        InvocationInfo=_invocation(err),
    )


@PSType(type_names=["System.Version[]", "System.Array", "System.Object"], skip_inheritance=True)
class _VersionArray(PSList):
    """PSCompatibleVersions as PowerShell types it."""


def _version_table(powershell: str, protocol: str) -> dict[str, Any]:
    """$PSVersionTable as the host sends it in APPLICATION_PRIVATE_DATA. PowerShell 2.0: the values of a Windows
    2008 R2 SP1 host (pypsrp's recording test_psrp_run_protocol_version_2.1.yml); 5.1: Windows 2016's
    (test_psrp_run_protocol_version_2.3.yml); 3.0/4.0 (no recording): 2.0's keys with their versions."""
    if powershell == "5.1":
        return {"PSVersion": PSVersion("5.1.14393.2248"), "PSEdition": "Desktop",
                "PSCompatibleVersions": _VersionArray([PSVersion(v) for v in
                                                       ("1.0", "2.0", "3.0", "4.0", "5.0", "5.1.14393.2248")]),
                "CLRVersion": PSVersion("4.0.30319.42000"), "BuildVersion": PSVersion("10.0.14393.2248"),
                "WSManStackVersion": PSVersion("3.0"), "PSRemotingProtocolVersion": PSVersion(protocol),
                "SerializationVersion": PSVersion("1.1.0.1")}
    compatible = [v for v in ("1.0", "2.0", "3.0", "4.0") if float(v) <= float(powershell)]
    legacy = powershell == "2.0"
    return {"WSManStackVersion": PSVersion("2.0" if legacy else "3.0"),
            "PSCompatibleVersions": _VersionArray([PSVersion(v) for v in compatible]),
            "SerializationVersion": PSVersion("1.1.0.1"),
            "BuildVersion": PSVersion("6.1.7601.17514" if legacy else "6.2.9200.16398"),
            "PSVersion": PSVersion(powershell),
            "CLRVersion": PSVersion("2.0.50727.5420" if legacy else "4.0.30319.18444"),
            "PSRemotingProtocolVersion": PSVersion(protocol)}


@dataclass
class _Pipeline:
    pipeline: ServerPipeline
    command_id: str  # as the client spelled it, echoed back
    input: list[Any] = field(default_factory=list)
    started: bool = False
    finished: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None
    host_answers: dict[int, Any] = field(default_factory=dict)  # PipelineHostResponse results by call id
    strict: bool = False  # the first error stops the pipeline ($ErrorActionPreference = 'Stop')
    dispatched: list[str] | None = None  # the dispatcher's commands (fault rules match on them)


class ShellClosed(Exception):
    pass


# How long a prompt waits for the client's host to answer (a person at a console may take a while).
HOST_ANSWER_SECONDS = 120.0

# PSRP protocol version per Windows PowerShell version (MS-PSRP SESSION_CAPABILITY, psrpcore ProtocolVersion).
PROTOCOL_FOR_POWERSHELL = {"2.0": "2.1", "3.0": "2.2", "4.0": "2.2", "5.1": "2.3"}
MULTI_STATEMENT_PROTOCOL = (2, 2)


def ps_property(obj: Any, name: str) -> Any:
    """A property of a received PSObject matched as PowerShell matches names: case-insensitively.

    pypsrp sends SET_MAX_RUNSPACES' call id as `CI` (test_psrp_set_runspaces.yml) where psrpcore reads `ci`."""
    meta = obj.PSObject if isinstance(obj, PSObject) else None
    if meta is not None:
        for prop in [*meta.extended_properties, *meta.adapted_properties]:
            if prop.name.lower() == name.lower():
                return prop.get_value(obj)
    raise KeyError(name)


class _LabRunspacePool(ServerRunspacePool):
    """psrpcore's server pool, with the call-id messages read case-insensitively.

    The pool-size handlers apply the new size only once the lab answers True (psrpcore's
    runspace_availability_response runs them)."""

    accepting_connect = False  # True only while a WSMan Connect's connectXml is fed

    def _process_SetMaxRunspaces(self, event: Any) -> None:
        ci, count = int(ps_property(event._ps_object, "ci")), int(ps_property(event._ps_object, "MaxRunspaces"))
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda e: setattr(self, "_max_runspaces", count)

    def _process_SetMinRunspaces(self, event: Any) -> None:
        ci, count = int(ps_property(event._ps_object, "ci")), int(ps_property(event._ps_object, "MinRunspaces"))
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda e: setattr(self, "_min_runspaces", count)

    def _process_GetAvailableRunspaces(self, event: Any) -> None:
        ci = int(ps_property(event._ps_object, "ci"))
        self._ci_events[ci] = event
        self._ci_handlers[ci] = None

    def _process_ResetRunspaceState(self, event: Any) -> None:
        self._process_GetAvailableRunspaces(event)

    def _process_ConnectRunspacePool(self, event: Any) -> None:
        # A new client attaching to a disconnected pool (WSMan Connect): the answer is RUNSPACEPOOL_INIT_DATA
        # (after SESSION_CAPABILITY) in connectResponseXml, and RUNSPACEPOOL_STATE Opened on the next Receive
        # (test_psrp_disconnect_runspaces.yml). pypsrp sends the message without sizes (<S />). Over Send it is
        # a session message PowerShell does not accept there (ReceivedUnsupportedAction): the shell breaks the pool.
        if self.accepting_connect:
            self.prepare_message(RunspacePoolInitData(MinRunspaces=self.min_runspaces, MaxRunspaces=self.max_runspaces))


# Client-to-server messages the lab answers or accepts; anything else breaks the pool (see _unsupported).
_HANDLED_EVENTS = frozenset({
    "SessionCapabilityEvent", "InitRunspacePoolEvent", "PublicKeyEvent", "CreatePipelineEvent",
    "PipelineInputEvent", "EndOfPipelineInputEvent", "GetCommandMetadataEvent", "SetMaxRunspacesEvent",
    "SetMinRunspacesEvent", "GetAvailableRunspacesEvent", "ResetRunspaceStateEvent",
    # Answers to host calls: the lab makes none, so there is nothing to hand them to (as a
    # PowerShell server drops a response whose call id it no longer waits for).
    "RunspacePoolHostResponseEvent", "PipelineHostResponseEvent",
})


def _runspace_pool(powershell: str) -> ServerRunspacePool:
    """A server pool that says what the emulated PowerShell says in SESSION_CAPABILITY."""
    try:
        protocol = PROTOCOL_FOR_POWERSHELL[powershell]
    except KeyError:
        raise ValueError(f"unknown PowerShell version {powershell!r}; one of "
                         f"{', '.join(PROTOCOL_FOR_POWERSHELL)}") from None
    pool = _LabRunspacePool(application_private_data={"PSVersionTable": _version_table(powershell, protocol)})
    pool.our_capability = SessionCapability(PSVersion=PSVersion("2.0"), protocolversion=PSVersion(protocol),
                                            SerializationVersion=pool.our_capability.SerializationVersion)
    return pool


class PsrpShell:
    resource_prefix = "http://schemas.microsoft.com/powershell/"

    def __init__(
        self,
        shell_id: str,
        configuration: str,
        registry: Registry,
        username: str,
        language: engine.LanguageMode,
        powershell: str = "5.1",
    ) -> None:
        self.shell_id = shell_id
        self.configuration = configuration
        self.registry = registry
        self.language = language
        self.session = Session(configuration=configuration, username=username)
        self._cond = threading.Condition()
        self._pool = _runspace_pool(powershell)
        self._queues: dict[uuid.UUID | None, deque[bytes]] = {None: deque()}
        self._pipes: dict[uuid.UUID, _Pipeline] = {}
        self._worker_pipe = threading.local()  # the pipeline a worker thread runs (for its host calls)
        self._closed = False
        self.worker_errors: list[str] = []
        self.powershell = powershell
        major, minor = PROTOCOL_FOR_POWERSHELL[powershell].split(".")
        self.protocol = (int(major), int(minor))

    # --- helpers (all called with the lock held) --------------------------------------------

    def _drain(self) -> None:
        while True:
            payload = self._pool.data_to_send(FRAGMENT_SIZE)
            if payload is None:
                break
            self._queues.setdefault(payload.pipeline_id, deque()).append(payload.data)
        self._cond.notify_all()

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        self._pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        while True:
            try:
                event = self._pool.next_event()
            except ValueError as exc:
                # A message type MS-PSRP does not define (psrpcore cannot even name it).
                if "PSRPMessageType" not in str(exc):
                    raise
                number = str(exc).split()[0]
                self._unsupported(f"message type 0x{int(number):08X}" if number.isdigit() else "unknown message type")
                continue
            if event is None:
                break
            self._on_event(event)
        self._drain()

    def _on_event(self, event: Any) -> None:
        name = type(event).__name__
        if name == "InitRunspacePoolEvent":
            host = self._pool.host
            # pypsrp's default host=None sends IsHostNull: nothing can answer a prompt.
            self.session.can_prompt = bool(host is not None and not host.IsHostNull and not host.IsHostUINull)
            # A host with a UI gets real PromptForChoice host calls (issue 16), not an automatic yes.
            self.session.ask = self._ask if self.session.can_prompt else None
        elif name == "PipelineHostResponseEvent":
            pipe = self._pipes.get(event.pipeline_id)
            if pipe is not None:
                pipe.host_answers[event.ci] = event.result
        elif name == "CreatePipelineEvent":
            pipe = self._pipes.get(event.pipeline_id)
            if pipe is not None and event.pipeline.no_input:
                self._start(pipe, None)
        elif name == "GetCommandMetadataEvent":
            pipe = self._pipes.get(event.pipeline_id)
            if pipe is not None:
                self._answer_metadata(pipe, event.pipeline)
        elif name == "PipelineInputEvent":
            pipe = self._pipes.get(event.pipeline_id)
            if pipe is not None:
                pipe.input.append(serialize.from_ps(event.data))
        elif name == "EndOfPipelineInputEvent":
            pipe = self._pipes.get(event.pipeline_id)
            if pipe is not None and not pipe.started:
                self._start(pipe, pipe.input)
        elif name in ("SetMaxRunspacesEvent", "SetMinRunspacesEvent"):
            self._answer_pool_size(event, maximum=name == "SetMaxRunspacesEvent")
        elif name == "GetAvailableRunspacesEvent":
            # RUNSPACE_AVAILABILITY with the free runspaces: the maximum less the running pipelines
            # (test_psrp_set_runspaces.yml: 1 free of 1, then 5 of 5 after SetMaxRunspaces(5)).
            busy = sum(1 for p in self._pipes.values() if p.started and not p.finished)
            ci = int(ps_property(event._ps_object, "ci"))
            self._pool.runspace_availability_response(ci, max(0, self._pool.max_runspaces - busy))
        elif name == "ResetRunspaceStateEvent":
            # Protocol 2.3 only (pypsrp refuses to send it to older pools); the lab keeps no variables.
            self._pool.runspace_availability_response(int(ps_property(event._ps_object, "ci")), True)
        elif name not in _HANDLED_EVENTS:
            self._unsupported(name.removesuffix("Event"))

    def _answer_pool_size(self, event: Any, maximum: bool) -> None:
        """SetMaxRunspaces/SetMinRunspaces as PowerShell's RunspacePool decides them: a maximum below the
        minimum or a minimum outside 1..maximum is refused (False), else applied (True)."""
        obj = event._ps_object
        ci = int(ps_property(obj, "ci"))
        count = int(ps_property(obj, "MaxRunspaces" if maximum else "MinRunspaces"))
        if maximum:
            ok = count >= max(1, self._pool.min_runspaces)
        else:
            ok = 1 <= count <= self._pool.max_runspaces
        self._pool.runspace_availability_response(ci, ok)

    def _unsupported(self, what: str) -> None:
        """A client message the lab does not implement: the pool breaks with an error record, so every
        Receive of the pool answers at once (RUNSPACEPOOL_STATE Broken) instead of timing out for ever.

        PowerShell's server throws PSRemotingDataStructureException (ReceivedUnsupportedAction) for an
        unexpected session message and closes the session; its exact text and how the WSMan plugin reports
        it are not in the recordings (UNCONFIRMED), so the wording below is the lab's."""
        if self._pool.state != RunspacePoolState.Opened:
            return
        record = error_record(LabError(
            message=f"The server received a PowerShell remoting message it does not support: {what}.",
            error_id="ReceivedUnsupportedAction",
            category=ErrorCategory.NotImplemented,
            exception_type="System.Management.Automation.Remoting.PSRemotingDataStructureException",
        ))
        self._pool.set_broken(record)
        # A client waiting on a pipeline's Receive never sees the pool's state: its pipelines fail too.
        for pipe in self._pipes.values():
            pipe.stop.set()
            if not pipe.finished and pipe.pipeline.state in (PSInvocationState.NotStarted, PSInvocationState.Running):
                fail_pipeline(pipe.pipeline, record)
                pipe.started = pipe.finished = True

    def _answer_metadata(self, pipe: _Pipeline, request: Any) -> None:
        """GET_COMMAND_METADATA: a Count object, then one CommandMetadata per matching visible command, then
        Completed, as PowerShell's HandleGetCommandMetadata runs it (Get-Command | Measure-Object, then
        Get-Command | Select-Object Name, Namespace, HelpUri, ...); shape per test_psrp_get_command_metadata.yml."""
        pipe.started = True
        pipe.pipeline.start()
        try:
            found = command_metadata.find_commands(self.registry, self.session, request, self.powershell)
            for obj in [command_metadata.count_object(len(found)), *found]:
                pipe.pipeline.write_output(obj)
        finally:
            pipe.pipeline.complete()
            pipe.finished = True

    def _statements(self, pipe: _Pipeline) -> list[engine.Statement]:
        metadata = pipe.pipeline.metadata
        assert metadata is not None  # set by CREATE_PIPELINE before the pipeline starts
        statements: list[engine.Statement] = [[]]
        for cmd in metadata.commands:
            args = [(name, serialize.from_ps(value)) for name, value in cmd.parameters]
            statements[-1].append(engine.Invocation(name=cmd.command_text, arguments=args,
                                                    is_script=bool(cmd.is_script)))
            if cmd.end_of_statement:
                statements.append([])
        statements = [s for s in statements if s]
        if (self.language is engine.LanguageMode.FULL and len(statements) == 1 and len(statements[0]) == 1
                and statements[0][0].is_script and pslang.is_dispatcher(statements[0][0].name)):
            # exmig's fixed script for several commands on PowerShell 2.0: run what its typed argument names.
            try:
                commands = pslang.dispatched_commands(statements[0][0].arguments)
            except pslang.ParseError as exc:
                raise engine.script_not_supported_error(f"{exc}: {statements[0][0].name}") from None
            pipe.strict = True
            pipe.dispatched = [name for name, _ in commands]
            return [[engine.Invocation(name=name, arguments=args)] for name, args in commands]
        if self.protocol < MULTI_STATEMENT_PROTOCOL:
            # Statements after the first travel in the PowerShell object's ExtraCmds, which protocol 2.2
            # (PowerShell 3.0) added. What a PowerShell 2.0 server does with it is UNCONFIRMED; the lab
            # assumes its deserializer ignores the unknown property, so only the first statement runs.
            statements = statements[:1]
        return statements

    def _start(self, pipe: _Pipeline, input_objects: list[Any] | None) -> None:
        pipe.started = True
        pipe.pipeline.start()
        try:
            statements = self._statements(pipe)
        except LabError as err:  # a script the lab does not run
            self._finish(pipe, err)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a SecureString the pool has no session key for
            self._finish(pipe, LabError(
                message=f"The pipeline's parameters could not be read: {type(exc).__name__}",
                error_id="LabParameterDecodeFailure",
                category=ErrorCategory.InvalidData,
                exception_type="System.Management.Automation.PSInvalidOperationException",
            ))
            return
        pipe.worker = threading.Thread(
            target=self._run, args=(pipe, statements, input_objects),
            name=f"lab-psrp-{pipe.command_id[:8]}", daemon=True,
        )
        pipe.worker.start()

    def _finish(self, pipe: _Pipeline, error: LabError | None) -> None:
        if pipe.pipeline.state == PSInvocationState.Running:
            if error is None:
                pipe.pipeline.complete()
            else:
                fail_pipeline(pipe.pipeline, error_record(error))
        pipe.finished = True
        self._drain()

    # --- host calls ------------------------------------------------------------------------------

    def _ask(self, caption: str, message: str, choices: list[tuple[str, str]], default: int) -> int | None:
        """PromptForChoice on the client's host, from the worker of the pipeline that prompts; waits (bounded)
        for the PipelineHostResponse. None when the pipeline stops or no answer comes."""
        pipe: _Pipeline | None = getattr(self._worker_pipe, "pipe", None)
        if pipe is None:
            return None
        requestor = ServerHostRequestor(pipe.pipeline)
        deadline = time.monotonic() + HOST_ANSWER_SECONDS
        with self._cond:
            ci = requestor.prompt_for_choice(caption, message, [ChoiceDescription(label, help_text)
                                                                for label, help_text in choices], default)
            self._drain()
            while ci not in pipe.host_answers:
                remaining = deadline - time.monotonic()
                if self._closed or pipe.stop.is_set() or remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
            answer = pipe.host_answers.pop(ci)
        return int(answer) if isinstance(answer, int) else None

    # --- worker ------------------------------------------------------------------------------

    def _run(self, pipe: _Pipeline, statements: list[engine.Statement], input_objects: list[Any] | None) -> None:
        shell = self

        class _Sink:
            def _live(self) -> ServerPipeline:
                if pipe.pipeline.state != PSInvocationState.Running or shell._closed:
                    raise engine.PipelineStopped()
                return pipe.pipeline

            def output(self, value: Any) -> None:
                ps_value = serialize.to_ps(value)
                with shell._cond:
                    self._live().write_output(ps_value)
                    shell._drain()

            def error(self, error: LabError) -> None:
                with shell._cond:
                    self._live().write_error(
                        _exception(error), _category(error), _target(error), error.error_id
                    )
                    shell._drain()

            def warning(self, text: str) -> None:
                with shell._cond:
                    self._live().write_warning(text)
                    shell._drain()

        failure: LabError | None = None
        self._worker_pipe.pipe = pipe
        try:
            engine.run_pipeline(self.registry, self.session, statements, _Sink(), self.language,
                                input_objects, pipe.stop, stop_on_error=pipe.strict)
        except LabError as err:
            failure = err
        except engine.PipelineStopped:
            pass
        except Exception as exc:  # noqa: BLE001 - a handler bug becomes a visible terminating error
            import traceback

            self.worker_errors.append(traceback.format_exc())
            failure = LabError(
                message=f"Lab handler failure: {type(exc).__name__}: {exc}",
                error_id="LabHandlerFailure",
                exception_type="System.InvalidOperationException",
            )
        with self._cond:
            if not self._closed:
                self._finish(pipe, failure)
            pipe.finished = True
            self._cond.notify_all()

    # --- WSMan operations --------------------------------------------------------------------

    def create(self, creation_xml_b64: str) -> None:
        with self._cond:
            self._feed(base64.b64decode(creation_xml_b64), None)

    def connect(self, connect_xml_b64: str) -> bytes:
        """WSMan Connect of a new client: its SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL in, the fragments for
        connectResponseXml out; the pool's Opened state waits in the pool queue for the client's Receive."""
        with self._cond:
            self._check_open()
            pool = self._pool
            assert isinstance(pool, _LabRunspacePool)
            pool.accepting_connect = True
            try:
                pool.receive_data(PSRPPayload(base64.b64decode(connect_xml_b64), StreamType.default, None))
                while True:
                    event = pool.next_event()
                    if event is None:
                        break
                    if type(event).__name__ not in ("SessionCapabilityEvent", "ConnectRunspacePoolEvent"):
                        self._on_event(event)
            finally:
                pool.accepting_connect = False
            answer = b""
            while True:
                payload = self._pool.data_to_send(FRAGMENT_SIZE)
                if payload is None:
                    break
                answer += payload.data
            self._pool.prepare_message(RunspacePoolStateMsg(RunspaceState=RunspacePoolState.Opened.value))
            self._drain()
            return answer

    def command(self, command_id: str, arguments_b64: str | None) -> None:
        pid = uuid.UUID(command_id)
        with self._cond:
            self._check_open()
            # The pipeline must exist before its CREATE_PIPELINE fragments are fed.
            pipeline = ServerPipeline(self._pool, pid)
            self._pipes[pid] = _Pipeline(pipeline=pipeline, command_id=command_id)
            self._queues.setdefault(pid, deque())
            if arguments_b64:
                self._feed(base64.b64decode(arguments_b64), pid)

    def has_command(self, command_id: str) -> bool:
        try:
            pid = uuid.UUID(command_id)
        except ValueError:
            return False
        with self._cond:
            return pid in self._pipes

    def commands(self) -> list[tuple[str, str]]:
        """(CommandId, CommandState) of the pipelines not yet terminated, for WS-Enumeration of commands."""
        with self._cond:
            return [(p.command_id.upper(), "Done" if p.finished else "Running") for p in self._pipes.values()]

    def delivered_completion(self, command_id: str) -> list[str] | None:
        """The cmdlets of a pipeline whose last output and final state have been handed out, else None."""
        pid = uuid.UUID(command_id)
        with self._cond:
            pipe = self._pipes.get(pid)
            metadata = pipe.pipeline.metadata if pipe is not None else None
            if pipe is None or metadata is None or not pipe.finished or self._queues.get(pid):
                return None
            if pipe.dispatched is not None:  # the dispatcher script: the commands its argument named
                return list(pipe.dispatched)
            return [cmd.command_text for cmd in getattr(metadata, "commands", [])]

    def send(self, command_id: str | None, data: bytes) -> None:
        pid = uuid.UUID(command_id) if command_id else None
        with self._cond:
            self._check_open()
            self._feed(data, pid)

    def receive(self, command_id: str | None, timeout: float, max_bytes: int) -> tuple[list[bytes], bool] | None:
        """Chunks for this target and whether the pipeline is done; None on OperationTimeout."""
        pid = uuid.UUID(command_id) if command_id else None
        start = time.monotonic()
        deadline = start + max(timeout, 0.0)
        with self._cond:
            while True:
                self._check_open()
                queue = self._queues.setdefault(pid, deque())
                pipe = self._pipes.get(pid) if pid else None
                done = pipe is not None and pipe.finished
                now = time.monotonic()
                queued = sum(len(c) for c in queue)
                if queue and (
                    pid is None or done or queued >= max_bytes or now - start >= FAST_PIPELINE_GRACE
                ):
                    break
                if now >= deadline:
                    if queue:
                        break
                    return None
                wait = deadline - now
                if queue:
                    wait = min(wait, FAST_PIPELINE_GRACE - (now - start))
                self._cond.wait(max(wait, 0.001))
            chunks: list[bytes] = []
            total = 0
            while queue and (not chunks or total + len(queue[0]) <= max_bytes):
                chunk = queue.popleft()
                chunks.append(chunk)
                total += len(chunk)
            done = pipe is not None and pipe.finished and not queue
            return chunks, done

    def signal(self, command_id: str | None, code: str) -> None:
        code_l = code.lower()
        pid = uuid.UUID(command_id) if command_id else None
        with self._cond:
            pipe = self._pipes.get(pid) if pid else None
            if pipe is None:
                return
            if code_l.endswith(("/ctrl_c", "/terminate")):
                pipe.stop.set()
                if pipe.pipeline.state == PSInvocationState.Running:
                    pipe.pipeline.begin_stop()
                    pipe.pipeline.stop()
                    self._drain()
            if code_l.endswith("/terminate"):
                if pipe.pipeline.state != PSInvocationState.Running:
                    pipe.pipeline.close()
                self._pipes.pop(pid, None)  # type: ignore[arg-type]
                self._queues.pop(pid, None)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for pipe in self._pipes.values():
                pipe.stop.set()
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise ShellClosed(self.shell_id)
