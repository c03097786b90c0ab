"""Windows commands exmig uses on a full-language endpoint: file cmdlets and the Cert: drive;
`register` also adds the snap-in cmdlets (snapins.py) and certutil.exe (certutil.py).

Error texts here are PowerShell's own (generic, seen in public logs).
"""

from __future__ import annotations

import codecs
import hashlib
from typing import Any

from orchestrator.lab.exchange.certutil import Certutil
from orchestrator.lab.exchange.model import CA, MY, REQUEST, ROOT, CertEntry, ExchangeServerModel
from orchestrator.lab.exchange.pserrors import PS, cmdlet_error
from orchestrator.lab.exchange.settings import LabSettings
from orchestrator.lab.exchange.snapins import Snapins
from orchestrator.lab.exchange.winfs import PathError, normalize, parent
from orchestrator.lab.exchange.x500 import format_name
from orchestrator.lab.objects import LabObject
from orchestrator.lab.registry import (
    CommandCall,
    CommandSpec,
    ErrorCategory,
    Kind,
    LabError,
    NativeCommandSpec,
    Parameter,
    Registry,
    Session,
)

FULL_LANGUAGE = "Microsoft.PowerShell"
ENCODINGS = ("Unknown", "String", "Unicode", "Byte", "BigEndianUnicode", "UTF8", "UTF7", "UTF32", "Ascii",
             "Default", "Oem")
HASH_ALGORITHMS = ("SHA1", "SHA256", "SHA384", "SHA512", "MACTripleDES", "MD5", "RIPEMD160")

X509_TYPES = [
    "System.Security.Cryptography.X509Certificates.X509Certificate2",
    "System.Security.Cryptography.X509Certificates.X509Certificate",
    "System.Object",
]

_S, _SA, _SW, _I, _O = Kind.STRING, Kind.STRINGS, Kind.SWITCH, Kind.INT, Kind.OBJECT
_COMMON = (
    Parameter("Verbose", _SW), Parameter("Debug", _SW), Parameter("ErrorAction", _S),
    Parameter("WarningAction", _S), Parameter("ErrorVariable", _S), Parameter("WarningVariable", _S),
    Parameter("OutVariable", _S), Parameter("OutBuffer", _I),
)


def _path_not_found(command: str, path: str) -> LabError:
    return cmdlet_error(command, f"Cannot find path '{path}' because it does not exist.", "PathNotFound",
                        ErrorCategory.ObjectNotFound, "System.Management.Automation.ItemNotFoundException", path)


def _directory_exist(command: str, message: str, path: str) -> LabError:
    return cmdlet_error(command, message, "DirectoryExist", ErrorCategory.ResourceExists, "System.IO.IOException",
                        path)


class WindowsCommands:
    def __init__(self, model: ExchangeServerModel, settings: LabSettings) -> None:
        self.model = model
        self.settings = settings

    # --- paths ----------------------------------------------------------------------------------

    @staticmethod
    def _cwd(session: Session) -> str:
        user = session.username.split("\\")[-1].split("@")[0] or "Administrator"
        return f"C:\\Users\\{user}"

    @staticmethod
    def _cert_path(path: str) -> tuple[str, str | None] | None:
        """'Cert:\\LocalMachine\\CA[\\thumb]' -> ('CA', thumb); None for file-system paths."""
        text = path.strip().replace("/", "\\")
        if text.lower().startswith("microsoft.powershell.security\\certificate::"):
            text = "cert:\\" + text.split("::", 1)[1]
        if not text.lower().startswith("cert:"):
            return None
        parts = [p for p in text[5:].split("\\") if p]
        if len(parts) < 2 or parts[0].lower() != "localmachine":
            return ("", None)
        store = next((s for s in (MY, CA, ROOT, REQUEST) if s.lower() == parts[1].lower()), "")
        return (store, parts[2].upper() if len(parts) > 2 else None)

    def _fs_path(self, call: CommandCall, path: str) -> str | None:
        try:
            return normalize(path, self._cwd(call.session))
        except PathError:
            return None

    # --- Set-Content / Get-Content ----------------------------------------------------------------

    def _encoding(self, call: CommandCall) -> str:
        value = call.params.get("Encoding", "Default")
        match = next((e for e in ENCODINGS if e.lower() == str(value).lower()), None)
        if match is None:
            raise cmdlet_error(
                call.name,
                (
                    f"Cannot bind parameter 'Encoding'. Cannot convert value \"{value}\" to type "
                    "\"Microsoft.PowerShell.Commands.FileSystemCmdletProviderEncoding\". Error: \"Unable to "
                    f"match the identifier name {value} to a valid enumerator name.  Specify one of the "
                    f"following enumerator names and try again: {', '.join(ENCODINGS)}\""
                ),
                "CannotConvertArgumentNoMessage",
                ErrorCategory.InvalidArgument, "System.Management.Automation.ParameterBindingException",
            )
        return match

    @staticmethod
    def _encode_text(text: str, encoding: str) -> bytes:
        if encoding in ("Unicode", "String"):
            return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
        if encoding == "BigEndianUnicode":
            return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
        if encoding == "UTF8":
            return codecs.BOM_UTF8 + text.encode("utf-8")
        if encoding == "UTF32":
            return codecs.BOM_UTF32_LE + text.encode("utf-32-le")
        if encoding == "UTF7":
            return text.encode("utf-7")
        if encoding == "Ascii":
            return text.encode("ascii", "replace")
        return text.encode("cp1252", "replace")  # Default/Oem/Unknown: the ANSI code page

    @staticmethod
    def _decode_text(data: bytes, encoding: str) -> str:
        for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"),
                           (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
            if data.startswith(bom):
                return data[len(bom) :].decode(codec, "replace")
        if encoding == "Unicode":
            return data.decode("utf-16-le", "replace")
        if encoding == "UTF8":
            return data.decode("utf-8", "replace")
        return data.decode("cp1252", "replace")

    def set_content(self, call: CommandCall) -> None:
        encoding = self._encoding(call)
        value = call.params.get("Value")
        items = value if isinstance(value, list) else [value]
        if encoding == "Byte":
            data = bytearray()
            for item in items:
                if isinstance(item, (bytes, bytearray)):
                    data += item
                elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 256:
                    data.append(item)
                else:
                    raise cmdlet_error(
                        call.name,
                        "Cannot proceed with byte encoding. When using byte encoding the content "
                        "must be of type byte.",
                        "ByteEncodingError", ErrorCategory.InvalidArgument, "System.ArgumentException",
                    )
            content = bytes(data)
        else:
            lines = []
            for item in items:
                if isinstance(item, LabObject):
                    lines.append(item.to_string or "")
                elif item is None:
                    lines.append("")
                else:
                    lines.append(str(item))
            content = self._encode_text("".join(line + "\r\n" for line in lines), encoding)
        with self.model.transaction():
            for raw in call.params["Path"]:
                path = self._fs_path(call, raw)
                if path is None or not self.model.fs.is_dir(parent(path)):
                    call.write_error(cmdlet_error(
                        call.name,
                        f"Could not find a part of the path '{path or raw}'.",
                        "GetContentWriterDirectoryNotFoundError",
                        ErrorCategory.ObjectNotFound, "System.IO.DirectoryNotFoundException", raw,
                    ))
                    continue
                if self.model.fs.is_dir(path):
                    # .NET opening a folder as a file: UnauthorizedAccessException, not a lab handler failure
                    # (IsADirectoryError). The text is .NET's; the error id follows Set-Content's naming, unconfirmed.
                    call.write_error(cmdlet_error(
                        call.name,
                        f"Access to the path '{self.model.fs.display(path)}' is denied.",
                        "GetContentWriterUnauthorizedAccessError",
                        ErrorCategory.PermissionDenied, "System.UnauthorizedAccessException", raw,
                    ))
                    continue
                self.model.fs.write(path, content)

    def get_content(self, call: CommandCall) -> None:
        encoding = self._encoding(call)
        read_count = call.params.get("ReadCount", 1)
        for raw in call.params["Path"]:
            path = self._fs_path(call, raw)
            data = self.model.fs.read(path) if path else None
            if data is None:
                call.write_error(_path_not_found(call.name, path or raw))
                continue
            if encoding == "Byte":
                if read_count <= 0:
                    call.write(data)
                elif read_count == 1:
                    for byte in data:
                        call.write(byte)
                else:
                    for i in range(0, len(data), read_count):
                        call.write(data[i : i + read_count])
                continue
            lines = self._decode_text(data, encoding).splitlines()
            if read_count <= 0:
                call.write(lines)
            else:
                for line in lines:
                    call.write(line)

    # --- items ------------------------------------------------------------------------------------

    def remove_item(self, call: CommandCall) -> None:
        with self.model.transaction():
            for raw in call.params["Path"]:
                cert = self._cert_path(raw)
                if cert is not None:
                    store, thumb = cert
                    if store and thumb and self.model.find(store, thumb) is not None:
                        self.model.remove(store, thumb)
                    else:
                        call.write_error(_path_not_found(call.name, raw))
                    continue
                path = self._fs_path(call, raw)
                if path is None or not self.model.fs.exists(path):
                    call.write_error(_path_not_found(call.name, path or raw))
                    continue
                self.model.fs.remove(path)

    def test_path(self, call: CommandCall) -> None:
        kind = str(call.params.get("PathType", "Any")).lower()
        for raw in call.params["Path"]:
            cert = self._cert_path(raw)
            if cert is not None:
                store, thumb = cert
                exists = bool(store) and (thumb is None or self.model.find(store, thumb) is not None)
                is_container = thumb is None
            else:
                path = self._fs_path(call, raw)
                exists = path is not None and self.model.fs.exists(path)
                is_container = path is not None and self.model.fs.is_dir(path)
            if kind == "container":
                exists = exists and is_container
            elif kind == "leaf":
                exists = exists and not is_container
            call.write(exists)

    def new_item(self, call: CommandCall) -> None:
        item_type = str(call.params.get("ItemType", "File")).lower()
        force = bool(call.params.get("Force", False))
        with self.model.transaction():
            for raw in call.params["Path"]:
                name = call.params.get("Name")
                path = self._fs_path(call, raw + ("\\" + name if name else ""))
                if path is None:
                    call.write_error(_path_not_found(call.name, raw))
                    continue
                if item_type == "directory":
                    if self.model.fs.is_dir(path) and not force:
                        call.write_error(_directory_exist(call.name, f"Item with specified name {path} already "
                                                          "exists.", path))
                        continue
                    try:
                        self.model.fs.mkdir(path)
                    except FileExistsError as exc:  # a file where the folder (or a parent) should be
                        call.write_error(_directory_exist(
                            call.name, f"An item with the specified name {exc.args[0]} already exists.", path))
                        continue
                    call.write(self._item_object(path, True))
                    continue
                if not self.model.fs.is_dir(parent(path)):
                    call.write_error(_path_not_found(call.name, parent(path)))
                    continue
                if self.model.fs.is_file(path) and not force:
                    call.write_error(cmdlet_error(
                        call.name,
                        f"The file '{path}' already exists.",
                        "NewItemIOError", ErrorCategory.WriteError, "System.IO.IOException", path,
                    ))
                    continue
                value = call.params.get("Value")
                self.model.fs.write(path, self._encode_text(str(value) if value is not None else "", "Default"))
                call.write(self._item_object(path, False))

    def _item_object(self, path: str, is_dir: bool) -> LabObject:
        shown = self.model.fs.display(path)
        types = (
            ["System.IO.DirectoryInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject", "System.Object"]
            if is_dir
            else ["System.IO.FileInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject", "System.Object"]
        )
        adapted: dict[str, Any] = {"Name": shown.rstrip("\\").rsplit("\\", 1)[-1] or shown, "FullName": shown}
        if not is_dir:
            adapted["Length"] = len(self.model.fs.read(path) or b"")
        extended = {
            "PSPath": f"Microsoft.PowerShell.Core\\FileSystem::{shown}",
            "PSParentPath": f"Microsoft.PowerShell.Core\\FileSystem::{parent(shown)}",
            "PSChildName": adapted["Name"],
            "PSIsContainer": is_dir,
        }
        return LabObject(types, adapted=adapted, extended=extended, to_string=adapted["Name"])

    def _cert_object(self, store: str, entry: CertEntry) -> LabObject:
        cert = entry.cert
        parent_path = f"Microsoft.PowerShell.Security\\Certificate::LocalMachine\\{store}"
        return LabObject(
            list(X509_TYPES),
            adapted={
                "Thumbprint": entry.thumbprint,
                "Subject": format_name(cert.subject),
                "Issuer": format_name(cert.issuer),
                "NotBefore": cert.not_valid_before_utc,
                "NotAfter": cert.not_valid_after_utc,
                "HasPrivateKey": entry.has_key,
                "SerialNumber": format(cert.serial_number, "X"),
                "FriendlyName": entry.friendly_name,
                "RawData": entry.der,
            },
            extended={
                "PSPath": f"{parent_path}\\{entry.thumbprint}",
                "PSParentPath": parent_path,
                "PSChildName": entry.thumbprint,
                "PSIsContainer": False,
            },
            to_string=f"[Subject]\r\n  {format_name(cert.subject)}\r\n",
        )

    def get_child_item(self, call: CommandCall) -> None:
        for raw in call.params.get("Path", ["."]):
            cert = self._cert_path(raw)
            if cert is not None:
                store, thumb = cert
                if not store:
                    call.write_error(_path_not_found(call.name, raw))
                    continue
                for entry in self.model.entries(store):
                    if thumb is None or entry.thumbprint == thumb:
                        call.write(self._cert_object(store, entry))
                continue
            path = self._fs_path(call, raw)
            if path is None or not self.model.fs.exists(path):
                call.write_error(_path_not_found(call.name, path or raw))
                continue
            if self.model.fs.is_file(path):
                call.write(self._item_object(path, False))
                continue
            for child, is_dir in self.model.fs.children(path):
                call.write(self._item_object(child, is_dir))

    def get_file_hash(self, call: CommandCall) -> None:
        algorithm = str(call.params.get("Algorithm", "SHA256")).upper()
        if algorithm not in {a.upper() for a in HASH_ALGORITHMS} or algorithm in ("MACTRIPLEDES",):
            raise LabError(
                message=f"Cannot validate argument on parameter 'Algorithm'. The argument \"{algorithm}\" does "
                f"not belong to the set \"{','.join(HASH_ALGORITHMS)}\" specified by the ValidateSet attribute. "
                "Supply an argument that is in the set and then try the command again.",
                error_id="ParameterArgumentValidationError,Get-FileHash",
                category=ErrorCategory.InvalidData,
                exception_type="System.Management.Automation.ParameterBindingValidationException",
                activity=call.name,
            )
        for raw in call.params["Path"]:
            path = self._fs_path(call, raw)
            data = self.model.fs.read(path) if path else None
            if data is None:
                call.write_error(_path_not_found(call.name, path or raw))
                continue
            digest = hashlib.new(algorithm.lower().replace("ripemd160", "ripemd160"), data).hexdigest().upper()
            call.write(LabObject(
                ["Microsoft.Powershell.Utility.FileHash", "System.Management.Automation.PSCustomObject",
                 "System.Object"],
                extended={"Algorithm": algorithm, "Hash": digest, "Path": self.model.fs.display(path or raw)},
            ))

    # --- registration -----------------------------------------------------------------------------

    def register(self, registry: Registry) -> None:
        snapins = Snapins(self.model.version)
        configs: tuple[str, ...] = (FULL_LANGUAGE,)
        if self.settings.exchange_endpoint_has_file_cmdlets:
            configs += ("Microsoft.Exchange",)
        path = Parameter("Path", _SA, mandatory=True, position=0, from_pipeline_property=True)
        table: list[tuple[str, Any, tuple[Parameter, ...], tuple[str, ...]]] = [
            ("Set-Content", self.set_content, (
                path, Parameter("Value", _O, mandatory=True, position=1, from_pipeline=True),
                Parameter("Encoding", _S), Parameter("Force", _SW), Parameter("PassThru", _SW),
                Parameter("Confirm", _SW), Parameter("WhatIf", _SW),
            ), configs),
            ("Get-Content", self.get_content, (
                path, Parameter("Encoding", _S), Parameter("ReadCount", _I), Parameter("TotalCount", _I),
                Parameter("Force", _SW),
            ), configs),
            ("Remove-Item", self.remove_item, (
                path, Parameter("Force", _SW), Parameter("Recurse", _SW), Parameter("Confirm", _SW),
                Parameter("WhatIf", _SW),
            ), configs),
            ("Test-Path", self.test_path, (path, Parameter("PathType", _S), Parameter("IsValid", _SW)), configs),
            ("New-Item", self.new_item, (
                path, Parameter("ItemType", _S), Parameter("Name", _S), Parameter("Value", _O),
                Parameter("Force", _SW), Parameter("Confirm", _SW), Parameter("WhatIf", _SW),
            ), configs),
            ("Get-ChildItem", self.get_child_item, (
                Parameter("Path", _SA, position=0, from_pipeline_property=True), Parameter("Force", _SW),
                Parameter("Recurse", _SW), Parameter("Filter", _S, position=1),
            ), configs),
            ("Add-PSSnapin", snapins.add_pssnapin, (
                Parameter("Name", _SA, mandatory=True, position=0), Parameter("PassThru", _SW),
            ), (FULL_LANGUAGE,)),
            ("Get-PSSnapin", snapins.get_pssnapin, (
                Parameter("Name", _SA, position=0), Parameter("Registered", _SW),
            ), (FULL_LANGUAGE,)),
        ]
        if self.settings.has_get_filehash:
            table.append(("Get-FileHash", self.get_file_hash, (path, Parameter("Algorithm", _S)), configs))
        for name, handler, parameters, configurations in table:
            registry.register(CommandSpec(
                name=name,
                handler=handler,
                parameters=parameters + _COMMON,
                implementing_type=f"{PS}{name.replace('-', '')}Command" if name != "Get-FileHash" else "",
                configurations=configurations,
            ))
        registry.register_native(NativeCommandSpec("certutil.exe", Certutil(self.model), aliases=("certutil",)))
