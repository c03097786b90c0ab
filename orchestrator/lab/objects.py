"""The values emulated commands take and return, independent of any wire format.

The lab's shells (PSRP, WinRS+CLIXML) turn these into the serialized form a real Windows
server sends; the emulated commands (Exchange, Windows) only ever build these. Keeping them
apart means the Exchange emulation never knows about psrpcore, and the serializer holds the
one place where the exact CLIXML layout (<Props> vs <MS>, type-name chains) is decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Secret:
    """A SecureString value after the shell decrypted it.

    Its text is reachable only through `reveal()`, so it never lands in a repr, a log line
    or an f-string by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass
class LabEnum:
    """A .NET enum value: serialized as <Obj> with the numeric value and its ToString text."""

    type_names: list[str]
    value: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class LabUri:
    """A System.Uri value: CLIXML has a primitive <URI> element for it (MS-PSRP 2.2.5.1.10), which pypsrp
    deserializes to a str. Exchange's InternalUrl/ExternalUrl/AutoDiscoverServiceInternalUri are Uris."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass
class LabList:
    """A collection with explicit .NET type names (e.g. Exchange's MultiValuedProperty).

    Plain Python lists serialize as System.Object[]; use this where the real server sends
    another collection type, because clients deserialize the two differently.
    """

    type_names: list[str]
    items: list[Any] = field(default_factory=list)


@dataclass
class LabObject:
    """A complex object as a real server serializes it.

    `adapted` goes to <Props> (the .NET object's own properties), `extended` to <MS>
    (note properties added by PowerShell or Exchange). Which property sits where matters:
    clients read them from different dictionaries.
    """

    type_names: list[str]
    adapted: dict[str, Any] = field(default_factory=dict)
    extended: dict[str, Any] = field(default_factory=dict)
    to_string: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        """Property lookup as PowerShell does it: case-insensitive, adapted or extended."""
        for bag in (self.adapted, self.extended):
            for key, value in bag.items():
                if key.lower() == name.lower():
                    return value
        return default

    def has(self, name: str) -> bool:
        sentinel = object()
        return self.get(name, sentinel) is not sentinel
