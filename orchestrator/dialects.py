"""Exchange 2007 vs 2010 certificate cmdlet syntax: the one place that knows the difference.

Per ../shared/reference/exchange-cmdlets.md §1.0:
- 2007 reads and writes files on the server (`-Path`), has no `-Server`, and its Import has no
  `-PrivateKeyExportable`;
- 2010 takes and returns bytes (`-FileData`, `.FileData`), and every cmdlet gets an explicit
  `-Server` (the reference's rule: never rely on which server a 2010 cmdlet picks by default).
Enable-ExchangeCertificate always gets `-Force`, so the SMTP overwrite prompt is answered and
never blocks a non-interactive session (§3.1).

A step's consecutive commands for one shell may go as one pipeline (orchestrator/steps.py), where a
server may run the next statement after a failed one: keep every such run of commands safe to go on
after a failure (write, use, remove the same file; a later command fails too or only cleans up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.commands import (
    Blob,
    Captured,
    Command,
    Flag,
    Number,
    Param,
    Secret,
    Shell,
    Switch,
    Text,
    TextList,
    Thumbprint,
    arg,
    switch,
    text,
)
from orchestrator.playbook import CertificateSpec, Server, Service

PFX_PASSWORD = Secret("pfx-password", "the PFX password")

# What a change can touch (Command.affects). Import stays on the default (both): a PKCS#7 or PFX may
# carry intermediates, which Windows puts into LocalMachine\CA.
FILES_ONLY: frozenset[str] = frozenset()
CA_STORE = frozenset({"ca_store"})
CERTIFICATES = frozenset({"certificates"})
ROOT_STORE = frozenset({"root_store"})


def remote_path(server: Server, file_name: str) -> str:
    return server.workdir.rstrip("\\") + "\\" + file_name


# --- Windows-level commands (the full-language session) ---------------------------------------


def ensure_folder(server: Server) -> Command:
    """Set-Content cannot create folders; New-Item -Force is a no-op when the folder exists."""
    return make_folder(server.workdir)


def write_file(server: Server, path: str, data: Blob) -> Command:
    return Command("Set-Content", (text("Path", path), Param("Value", data), text("Encoding", "Byte")),
                   shell=Shell.SYSTEM, affects=FILES_ONLY)


def read_file(server: Server, path: str, capture: str) -> Command:
    return Command(
        "Get-Content",
        (text("Path", path), text("Encoding", "Byte"), Param("ReadCount", Number(0))),
        shell=Shell.SYSTEM,
        capture=capture,
        changes=False,
    )


def remove_file(server: Server, path: str) -> Command:
    return Command("Remove-Item", (text("Path", path),), shell=Shell.SYSTEM, affects=FILES_ONLY)


def make_folder(path: str) -> Command:
    return Command("New-Item", (text("Path", path), text("ItemType", "Directory"), switch("Force")),
                   shell=Shell.SYSTEM, affects=FILES_ONLY)


def write_text(path: str, value: str) -> Command:
    """A small text file (an ACME http-01 token, its web.config). ASCII: a UTF-8 BOM would be served as part of
    the token; the CRLF Set-Content ends it with is ignored by the CA (RFC 8555 §8.3)."""
    return Command("Set-Content", (text("Path", path), text("Value", value), text("Encoding", "Ascii")),
                   shell=Shell.SYSTEM, affects=FILES_ONLY)


def remove_path(path: str) -> Command:
    """Remove-Item that does not fail on a file already gone (removing a challenge response twice is fine)."""
    return Command("Remove-Item", (text("Path", path), text("ErrorAction", "SilentlyContinue")), shell=Shell.SYSTEM,
                   affects=FILES_ONLY)


def test_path(path: str) -> Command:
    return Command("Test-Path", (text("Path", path),), shell=Shell.SYSTEM, changes=False)


def read_stores() -> Command:
    """LocalMachine\\CA and \\Root in one Get-ChildItem (two paths, told apart by PSParentPath): the root check
    costs no request where install-chain reads the CA store anyway."""
    return Command("Get-ChildItem", (Param("Path", TextList(("Cert:\\LocalMachine\\CA", "Cert:\\LocalMachine\\Root"))),),
                   shell=Shell.SYSTEM, changes=False)


def read_store(name: str) -> Command:
    """One store: for a server whose objects do not say which store they are from."""
    return Command("Get-ChildItem", (text("Path", f"Cert:\\LocalMachine\\{name}"),), shell=Shell.SYSTEM,
                   changes=False)


def add_to_ca_store(server: Server, path: str) -> Command:
    """certutil -addstore CA: Import-Certificate does not exist before Windows 2012 (§6)."""
    return Command("certutil.exe", (arg("-addstore"), arg("CA"), arg(path)), shell=Shell.SYSTEM, native=True,
                   affects=CA_STORE)


def add_to_root_store(server: Server, path: str) -> Command:
    """certutil -addstore Root: LocalMachine\\Root, which Exchange's import needs to trust the CA (roots.py)."""
    return Command("certutil.exe", (arg("-addstore"), arg("Root"), arg(path)), shell=Shell.SYSTEM, native=True,
                   affects=ROOT_STORE)


def native_failure(output: list[Any]) -> str | None:
    """certutil reports failure in its output (its exit code does not reach a PSRP client)."""
    for line in "\n".join(str(o) for o in output).splitlines():
        if "FAILED" in line or "command failed" in line.lower():
            return line.strip()
    return None


def add_snapin(server: Server) -> Command | None:
    if server.snapin is None:
        return None
    return Command("Add-PSSnapin", (text("Name", server.snapin),), changes=False)


# --- Exchange cmdlets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    version: int

    def _server(self, server: Server) -> tuple[Param, ...]:
        return (text("Server", server.name),) if self.version == 2010 else ()

    def new_request(self, server: Server, cert: CertificateSpec, csr_path: str) -> list[Command]:
        params: list[Param] = [
            switch("GenerateRequest"),
            text("SubjectName", cert.subject.x500()),
            Param("DomainName", TextList(tuple(cert.domains))),
            Param("KeySize", Number(cert.key_size)),
            Param("PrivateKeyExportable", Flag(cert.private_key_exportable)),
        ]
        if cert.friendly_name:
            params.append(text("FriendlyName", cert.friendly_name))
        if self.version == 2010:
            # 2010 returns the request text; exmig keeps it (the blog's `$Data = ...; Set-Content`).
            return [Command("New-ExchangeCertificate", (*params, *self._server(server)), capture="Request",
                            affects=CERTIFICATES)]
        # 2007 writes the request file on the server; read it back so exmig holds the CSR.
        return [
            ensure_folder(server),
            Command("New-ExchangeCertificate", (*params, text("Path", csr_path)), affects=CERTIFICATES),
            read_file(server, csr_path, capture="Request"),
        ]

    def import_response(self, server: Server, response: Blob, file_name: str) -> list[Command]:
        """Complete the pending request with the CA's certificate."""
        if self.version == 2010:
            return [Command("Import-ExchangeCertificate", (Param("FileData", response), *self._server(server)),
                            capture="Imported")]
        path = remote_path(server, file_name)
        return [
            ensure_folder(server),
            write_file(server, path, response),
            Command("Import-ExchangeCertificate", (text("Path", path),), capture="Imported"),
            remove_file(server, path),
        ]

    def import_pfx(self, server: Server, pfx: Blob, file_name: str, exportable: bool) -> list[Command]:
        if self.version == 2010:
            return [Command(
                "Import-ExchangeCertificate",
                (Param("FileData", pfx), Param("Password", PFX_PASSWORD),
                 Param("PrivateKeyExportable", Flag(exportable)), *self._server(server)),
                capture="Imported",
            )]
        return [Command("Import-ExchangeCertificate",
                        (text("Path", remote_path(server, file_name)), Param("Password", PFX_PASSWORD)),
                        capture="Imported")]

    def enable(self, server: Server, thumb: Thumbprint, services: list[Service], keep_http: bool = False) -> Command:
        """`keep_http`: -DoNotRequireSsl, so the Default Web Site keeps answering plain HTTP. Enable -Services IIS
        otherwise sets Require SSL on it (Microsoft's Enable-ExchangeCertificate page; reference §1.4), and an
        ACME CA fetches http-01 tokens over HTTP only (RFC 8555 §8.3): the next renewal would fail with 403.4.
        The virtual directories keep their own SSL settings. (2007's -DoNotRequireSsl is UNCONFIRMED; the lab's
        LabSettings.enable_2007_has_donotrequiressl.)"""
        extra = (switch("DoNotRequireSsl"),) if keep_http and Service.IIS in services else ()
        return Command(
            "Enable-ExchangeCertificate",
            (Param("Thumbprint", thumb), Param("Services", TextList(tuple(s.value for s in services))),
             switch("Force"), *extra, *self._server(server)),
            affects=CERTIFICATES,
            silent=True,
        )

    def export(self, server: Server, thumb: Thumbprint, file_name: str) -> list[Command]:
        params = (Param("Thumbprint", thumb), Param("BinaryEncoded", Switch()), Param("Password", PFX_PASSWORD))
        if self.version == 2010:
            return [Command("Export-ExchangeCertificate", (*params, *self._server(server)), capture="Export")]
        path = remote_path(server, file_name)
        return [
            ensure_folder(server),
            Command("Export-ExchangeCertificate", (*params, text("Path", path))),
            read_file(server, path, capture="Export"),
            remove_file(server, path),
        ]

    def export_request(self, server: Server, thumb: Thumbprint) -> Command:
        """A pending request's CSR again (its reply was lost): Export-ExchangeCertificate of a pending
        request gives the request text, and changes nothing."""
        return Command("Export-ExchangeCertificate", (Param("Thumbprint", thumb), *self._server(server)),
                       capture="Request", changes=False)

    def get_certificate(self, server: Server, thumb: Thumbprint) -> Command:
        return Command("Get-ExchangeCertificate", (Param("Thumbprint", thumb), *self._server(server)),
                       changes=False)

    def list_certificates(self, server: Server) -> Command:
        return Command("Get-ExchangeCertificate", self._server(server), changes=False)


def dialect_for(server: Server) -> Dialect:
    return Dialect(server.version)


def exported_pfx(file_name: str) -> Blob:
    return Blob("pfx", Captured("Export", "FileData", f"the PFX exported on the source ({file_name})"))


__all__ = [
    "Dialect", "PFX_PASSWORD", "Text", "add_snapin", "ensure_folder", "add_to_ca_store", "add_to_root_store",
    "dialect_for", "exported_pfx",
    "read_file", "remote_path", "remove_file", "write_file",
]
