"""The engine and serializer without the wire (the wire tests cover them end to end)."""

from __future__ import annotations

import datetime
import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from psrpcore._crypto import PSRemotingCrypto
from psrpcore.types import serialize as ps_serialize

from orchestrator.lab import engine
from orchestrator.lab.engine import Invocation, LanguageMode, run_pipeline
from orchestrator.lab.objects import LabEnum, LabList, LabObject
from orchestrator.lab.registry import LabError, Registry, Session
from orchestrator.lab.serialize import from_ps, to_ps
from orchestrator.lab.wsman import parse_duration, parse_request

from .conftest import make_registry


class Collect:
    def __init__(self) -> None:
        self.out: list[Any] = []
        self.errors: list[LabError] = []
        self.warnings: list[str] = []

    def output(self, value: Any) -> None:
        self.out.append(value)

    def error(self, error: LabError) -> None:
        self.errors.append(error)

    def warning(self, text: str) -> None:
        self.warnings.append(text)


@pytest.fixture
def reg() -> Registry:
    return make_registry()


def session() -> Session:
    return Session(configuration="Microsoft.Exchange", username="admin")


def test_statements_and_pipes(reg: Registry) -> None:
    sink = Collect()
    run_pipeline(reg, session(), [
        [Invocation("Add-LabOne", [("Value", 1)])],
        [Invocation("Add-LabOne", [("Value", 5)]), Invocation("Add-LabOne"), Invocation("Add-LabOne")],
    ], sink)
    assert sink.out == [2, 8]


def test_pipeline_input_feeds_first_command_only(reg: Registry) -> None:
    sink = Collect()
    run_pipeline(reg, session(), [[Invocation("Add-LabOne")], [Invocation("Add-LabOne", [("Value", 0)])]],
                 sink, input_objects=[10, 20])
    assert sink.out == [11, 21, 1]


def test_terminating_error_stops_and_keeps_earlier_output(reg: Registry) -> None:
    sink = Collect()
    with pytest.raises(LabError) as info:
        run_pipeline(reg, session(), [[Invocation("Invoke-LabFailure")], [Invocation("Get-LabThing")]], sink)
    assert info.value.error_id == "LabHard,Lab.Test.Fail"
    assert info.value.activity == "Invoke-LabFailure"
    assert sink.out == ["before failure"]


def test_non_terminating_error_continues(reg: Registry) -> None:
    sink = Collect()
    run_pipeline(reg, session(), [[Invocation("Write-LabMixed")]], sink)
    assert sink.out == ["first", "second"]
    assert [e.message for e in sink.errors] == ["soft failure"]
    assert sink.warnings == ["be careful"]


def test_unbindable_piped_object_is_non_terminating(reg: Registry) -> None:
    sink = Collect()
    run_pipeline(reg, session(), [[Invocation("Add-LabOne")]], sink, input_objects=[1, "x", 3])
    assert sink.out == [2, 4]
    assert len(sink.errors) == 1 and sink.errors[0].error_id.startswith("CannotConvertArgumentNoMessage")


def test_command_not_found(reg: Registry) -> None:
    with pytest.raises(LabError) as info:
        run_pipeline(reg, session(), [[Invocation("Get-Nothing")]], Collect())
    assert info.value.error_id == "CommandNotFoundException"


@pytest.mark.parametrize("mode", [LanguageMode.NO_LANGUAGE, LanguageMode.RESTRICTED, LanguageMode.FULL])
def test_scripts_refused_before_anything_runs(reg: Registry, mode: LanguageMode) -> None:
    sink = Collect()
    with pytest.raises(LabError) as info:
        run_pipeline(reg, session(), [[Invocation("Add-LabOne", [("Value", 1)])],
                                      [Invocation("$x = 1", is_script=True)]], sink, mode)
    assert sink.out == []
    expected = "ScriptsNotAllowed" if mode is LanguageMode.NO_LANGUAGE else "LabScriptNotSupported"
    assert info.value.error_id == expected


def test_stop_event(reg: Registry) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(engine.PipelineStopped):
        run_pipeline(reg, session(), [[Invocation("Get-LabThing")]], Collect(), stop=stop)


def _xml(value: Any) -> str:
    return ET.tostring(ps_serialize(to_ps(value), PSRemotingCrypto())).decode()


def test_serialized_layout() -> None:
    obj = LabObject(["A.B"], adapted={"P": 1}, extended={"E": "x"}, to_string="ts")
    xml = _xml(obj)
    assert '<TN RefId="0"><T>A.B</T><T>System.Object</T></TN>' in xml
    assert '<Props><I32 N="P">1</I32></Props><MS><S N="E">x</S></MS><ToString>ts</ToString>' in xml
    assert _xml(LabEnum(["A.Flags"], 3, "X, Y")) == (
        '<Obj RefId="0"><I32>3</I32><TN RefId="0"><T>A.Flags</T><T>System.Enum</T><T>System.ValueType</T>'
        "<T>System.Object</T></TN><ToString>X, Y</ToString></Obj>"
    )
    assert "<T>A.MVP</T><T>System.Object</T></TN><LST><S>a</S></LST>" in _xml(LabList(["A.MVP"], ["a"]))
    assert "<T>System.Object[]</T>" in _xml([1])
    assert _xml(b"\x00\x01") == "<BA>AAE=</BA>"
    # A server's local time with its offset (test_wire_shape.py): on a UTC host "+00:00", never .NET UTC's "Z".
    offset = datetime.datetime(2030, 1, 1).astimezone().strftime("%z")
    local = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    assert _xml(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)) == f"<DT>{local}{offset[:3]}:{offset[3:]}</DT>"


def test_from_ps_plain_values() -> None:
    from psrpcore.types import PSByteArray, PSInt, PSString

    assert from_ps(PSString("a")) == "a" and type(from_ps(PSString("a"))) is str
    assert from_ps(PSByteArray(b"ab")) == b"ab"
    assert from_ps(PSInt(3)) == 3
    assert from_ps([PSString("a"), None]) == ["a", None]


def test_wsman_parse_request() -> None:
    req = parse_request(
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        b'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header>'
        b"<a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive</a:Action>"
        b"<a:MessageID>uuid:ABC</a:MessageID><w:ResourceURI>r</w:ResourceURI>"
        b"<w:OperationTimeout>PT20.500S</w:OperationTimeout><w:MaxEnvelopeSize>512000</w:MaxEnvelopeSize>"
        b'<w:SelectorSet><w:Selector Name="ShellId">S1</w:Selector></w:SelectorSet>'
        b"</s:Header><s:Body/></s:Envelope>"
    )
    assert (req.short_action, req.message_id, req.shell_id) == ("Receive", "uuid:ABC", "S1")
    assert req.operation_timeout == 20.5 and req.max_envelope_size == 512000
    assert parse_duration("PT1M5S") == 65.0


def test_request_log_is_bounded() -> None:
    from orchestrator.lab.requestlog import RequestLog, RequestRecord

    log = RequestLog(max_records=10)
    for _ in range(25):
        log.add(RequestRecord(log.next_seq(), "POST", "/wsman", "Receive", 200, 1, 1, 0.0))
    assert len(log) <= 10 and log.dropped + len(log) == 25
    assert log.records()[-1].seq == 25
