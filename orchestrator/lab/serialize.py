"""The lab's neutral values <-> psrpcore types.

Outgoing (`to_ps`): the one place where the CLIXML layout is decided, so that pypsrp's
deserializer yields what it yields against real Exchange (protocol notes §4.3, §4.6):
LabObject.adapted -> <Props>, .extended -> <MS>, type names -> <TN> ending in System.Object,
to_string -> <ToString>; LabEnum -> <Obj><I32/><TN/><ToString/></Obj>; LabList -> a
collection with its own TN; bytes -> <BA>; plain lists -> System.Object[]; datetime -> <DT>,
timedelta -> <TS>; LabUri -> <URI>.

Incoming (`from_ps`): parameter values and pipeline input as plain Python, SecureStrings
decrypted into `objects.Secret`.
"""

from __future__ import annotations

import datetime
import enum
import threading
from typing import Any

from psrpcore.types import (
    PSEnumBase,
    PSList,
    PSNoteProperty,
    PSObject,
    PSSecureString,
    PSType,
    PSUri,
    add_note_property,
)

from orchestrator.lab.objects import LabEnum, LabList, LabObject, LabUri, Secret

OBJECT_ARRAY_TYPES = ["System.Object[]", "System.Array", "System.Object"]
_ENUM_BASE_TYPES = ["System.Enum", "System.ValueType", "System.Object"]


def _type_chain(names: list[str]) -> list[str]:
    # pypsrp hands back raw XML for a TN chain without a type it knows; System.Object is one.
    return list(names) if names and names[-1] == "System.Object" else [*names, "System.Object"]


_enum_cache: dict[tuple[tuple[str, ...], int, str], Any] = {}
_enum_lock = threading.Lock()


def _enum_member(value: LabEnum) -> Any:
    """A psrpcore enum member whose TN, numeric value and ToString match the LabEnum.

    psrpcore only writes <TN> + <ToString> for enum members, so each distinct (type, value,
    text) gets a one-member enum class; the member's name is the ToString text ("IIS, SMTP").
    """
    names = value.type_names or ["System.Int32"]
    # PSType appends the inherited System.Enum/ValueType/Object itself.
    chain = [n for n in names if n not in _ENUM_BASE_TYPES] or ["System.Int32"]
    key = (tuple(chain), int(value.value), value.text)
    with _enum_lock:
        member = _enum_cache.get(key)
        if member is None:
            members = {value.text or "none": int(value.value)}
            # The functional Enum API builds the class; psrpcore's stubs only describe members.
            cls = PSEnumBase(f"LabEnum{len(_enum_cache)}", members)  # type: ignore[arg-type]
            cls = PSType(chain, rehydrate=False)(cls)  # type: ignore[type-var]
            member = next(iter(cls))
            _enum_cache[key] = member
    return member


class _ServerLocalTime(datetime.tzinfo):
    """The lab host's local zone, written with its offset even where that is +00:00: psrpcore writes "Z" for
    datetime.timezone.utc and for anything equal to it, which is .NET's UTC kind, not a server's local time."""

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        moment = (dt or datetime.datetime.now()).replace(tzinfo=None)
        return moment.astimezone().utcoffset() or datetime.timedelta(0)

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
        return datetime.timedelta(0)

    def tzname(self, dt: datetime.datetime | None) -> str:
        return "server local time"

    def fromutc(self, dt: datetime.datetime) -> datetime.datetime:
        offset = dt.replace(tzinfo=datetime.UTC).astimezone().utcoffset() or datetime.timedelta(0)
        return dt + offset


_SERVER_LOCAL = _ServerLocalTime()


def to_ps(value: Any) -> Any:
    """Neutral value -> what psrpcore serializes the way a Windows server would."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, datetime.datetime):
        # <DT>; pypsrp hands it back as the raw string (notes §4.6). A Windows server serializes its DateTimes
        # (NotBefore, NotAfter...) as local time with the UTC offset, "2027-12-01T14:49:00-08:00" (.NET's
        # round-trip form for DateTimeKind.Local), never as "Z": the lab's local time is the lab host's.
        return value.astimezone(_SERVER_LOCAL) if value.tzinfo is not None else value
    if isinstance(value, datetime.timedelta):
        return value  # <TS>
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, Secret):
        # The lab never sends secrets back in clear; a SecureString needs the session key.
        raise TypeError("a Secret cannot be written to an output stream")
    if isinstance(value, LabUri):
        return PSUri(value.value)  # <URI>, as .NET serializes System.Uri
    if isinstance(value, LabEnum):
        return _enum_member(value)
    if isinstance(value, LabList):
        lst = PSList([to_ps(v) for v in value.items])
        lst.PSObject.type_names = _type_chain(value.type_names)
        return lst
    if isinstance(value, (list, tuple)):
        lst = PSList([to_ps(v) for v in value])
        lst.PSObject.type_names = list(OBJECT_ARRAY_TYPES)
        return lst
    if isinstance(value, LabObject):
        obj = PSObject()
        obj.PSObject.type_names = _type_chain(value.type_names)
        for name, v in value.adapted.items():
            obj.PSObject.adapted_properties.append(PSNoteProperty(name, to_ps(v)))
        for name, v in value.extended.items():
            add_note_property(obj, name, to_ps(v))
        if value.to_string is not None:
            obj.PSObject.to_string = value.to_string
        return obj
    if isinstance(value, enum.Enum):
        return value
    raise TypeError(f"the lab cannot serialize {type(value).__name__}")


def from_ps(value: Any) -> Any:
    """A deserialized client value (parameter or input object) -> plain Python."""
    if value is None:
        return None
    if isinstance(value, PSSecureString):
        return Secret(str(value.decrypt()))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                                 value.microsecond, value.tzinfo)
    if isinstance(value, datetime.timedelta):
        return datetime.timedelta(seconds=value.total_seconds())
    if isinstance(value, enum.Enum):
        return int(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {from_ps(k): from_ps(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_ps(v) for v in value]
    if isinstance(value, PSObject):
        meta = value.PSObject
        adapted = {p.name: from_ps(p.get_value(value)) for p in meta.adapted_properties}
        extended = {p.name: from_ps(p.get_value(value)) for p in meta.extended_properties}
        return LabObject(
            type_names=[t.removeprefix("Deserialized.") for t in meta.type_names],
            adapted=adapted,
            extended=extended,
            to_string=meta.to_string,
        )
    return value
