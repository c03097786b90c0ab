"""The *-ExchangeCertificate cmdlets of one emulated server (2007 and 2010 share the logic;
the parameter tables in params.py carry the syntax differences).

Errors: terminating (raised) for Enable/Export/Import/New/Remove; Get-ExchangeCertificate with an
unknown thumbprint writes a non-terminating error like other Exchange Get-* tasks (lab choice).
"""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.lab.exchange import params, pki
from orchestrator.lab.exchange.certificate import (
    binary_file_data,
    certificate_domains,
    exchange_certificate,
    parse_services,
)
from orchestrator.lab.exchange.certificate import windows_datetime as expiry
from orchestrator.lab.exchange.model import (
    CA,
    DEFAULT_FRIENDLY_NAME,
    MY,
    ORIGIN_REGISTRY,
    REQUEST,
    ROOT,
    CertEntry,
    ExchangeServerModel,
    Services,
    services_text,
)
from orchestrator.lab.exchange.settings import LabSettings
from orchestrator.lab.exchange.winfs import PathError, normalize, parent
from orchestrator.lab.exchange.x500 import DNParseError, common_name, format_name, parse_dn, valid_domain
from orchestrator.lab.objects import LabObject, Secret
from orchestrator.lab.registry import CommandCall, CommandSpec, LabError, Registry

TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks."
EMS_2007_SNAPIN = "Microsoft.Exchange.Management.PowerShell.Admin"
EXCHANGE_CONFIGURATION = "Microsoft.Exchange"
KEY_SIZES = (1024, 2048, 4096)


def implementing_type(command: str) -> str:
    return TASKS + command.replace("-", "")


class ExchangeCertificateCmdlets:
    """Handlers bound to one server model and its settings."""

    def __init__(self, model: ExchangeServerModel, settings: LabSettings) -> None:
        self.model = model
        self.settings = settings

    # --- helpers --------------------------------------------------------------------------------

    def _error(self, call: CommandCall, key: str, **fmt: object) -> LabError:
        server = call.params.get("Server") if self.model.version == "2010" else None
        return self.settings.error(key, call.name, implementing_type(call.name), rpc_server=server, **fmt)

    def _confirm(self, call: CommandCall, prompt: str) -> bool:
        """A ShouldContinue/ShouldProcess prompt. A PSRP client with a host UI gets a real PromptForChoice host
        call (issue 16) and its answer; a session that can prompt but cannot relay host calls (the lab's WinRS
        shells) gets the prompt's default answer (Y); one that cannot prompt fails as PowerShell does."""
        if call.session.ask is not None:
            answer = call.session.ask("Confirm", prompt, [("&Yes", "Continue with the operation."),
                                                         ("&No", "Do not continue with the operation.")], 0)
            if answer is None:
                raise self._error(call, "prompt_unsupported", prompt=prompt)
            return answer == 0
        if call.session.can_prompt:
            return True
        raise self._error(call, "prompt_unsupported", prompt=prompt)

    def _should_process(self, call: CommandCall, target: str) -> bool:
        """-WhatIf: do nothing. -Confirm: prompt. Returns False when the action must be skipped."""
        if call.params.get("WhatIf") is True:
            return False
        if call.params.get("Confirm") is True:
            return self._confirm(
                call, self.settings.text("should_process_prompt", command=call.name, target=target)
            )
        return True

    def _check_server(self, call: CommandCall) -> None:
        server = call.params.get("Server")
        if server is None:
            return
        if server.strip().lower() not in (self.model.name.lower(), self.model.fqdn.lower()):
            raise self._error(
                call, "server_not_found", server=server, domain_controller=f"dc01.{self._domain()}"
            )

    def _domain(self) -> str:
        return self.model.fqdn.split(".", 1)[1] if "." in self.model.fqdn else self.model.fqdn

    def _output(self, entry: CertEntry) -> LabObject:
        return exchange_certificate(self.model, entry, self.settings)

    def _lookup(self, thumbprint: str, stores: tuple[str, ...] = (MY, REQUEST)) -> CertEntry | None:
        for store_name in stores:
            entry = self.model.find(store_name, thumbprint)
            if entry is not None:
                return entry
        return None

    def _parse_services(self, call: CommandCall, values: list[str]) -> int:
        flags, unknown = parse_services(values)
        allowed = "None, IMAP, POP, UM, IIS, SMTP"
        if self.model.version == "2010":
            allowed += ", Federation"
        elif unknown is None and flags & Services.FEDERATION:
            unknown = "Federation"
        if unknown is not None:
            raise self._error(
                call, "invalid_services", value=",".join(values), name=unknown, allowed=allowed
            )
        return flags

    def _resolve_path(self, call: CommandCall, path: str) -> str:
        try:
            return normalize(path)
        except PathError:
            raise self._error(call, "directory_not_found", path=path) from None

    def _write_file(self, call: CommandCall, path: str, data: bytes, force: bool) -> None:
        full = self._resolve_path(call, path)
        if not self.model.fs.is_dir(parent(full)):
            raise self._error(call, "directory_not_found", path=full)
        if self.model.fs.is_file(full) and not force:
            raise self._error(call, "file_exists", path=full)
        self.model.fs.write(full, data)

    # --- Enable (also used by New for self-signed certificates) ---------------------------------

    def _enable(self, call: CommandCall, entry: CertEntry, flags: int, force: bool) -> None:
        model = self.model
        if flags & Services.FEDERATION:
            raise self._error(call, "federation_not_allowed")
        if not entry.has_key:
            raise self._error(call, "private_key_missing", thumbprint=entry.thumbprint)
        current = model.find(MY, model.default_smtp) if model.default_smtp else None
        if flags & Services.SMTP and current is not None and current is not entry and not force:
            if self.settings.enable_applies_before_smtp_prompt:
                # IIS, POP and IMAP are bound before the SMTP question is asked: without a host that can answer
                # it, the server is left half-changed (issue 16). Saved now: the prompt's failure ends the command.
                self._bind(call, entry, flags & ~int(Services.SMTP))
                model.save()
            if not self._confirm(
                call,
                self.settings.text(
                    "smtp_overwrite_prompt",
                    current=current.thumbprint,
                    current_expiry=expiry(current.cert.not_valid_after_utc),
                    new=entry.thumbprint,
                    new_expiry=expiry(entry.cert.not_valid_after_utc),
                ),
            ):
                flags &= ~int(Services.SMTP)  # "No": the default SMTP certificate stays
        self._bind(call, entry, flags)

    def _bind(self, call: CommandCall, entry: CertEntry, flags: int) -> None:
        """Enable's effect: bindings and configured names change; Services is computed from them
        (ExchangeServerModel.services_of). `entry.services` keeps what was ever enabled on the certificate."""
        model = self.model
        cn = common_name(entry.cert.subject) or model.fqdn
        if flags & Services.SMTP:
            model.default_smtp = entry.thumbprint
        if flags & Services.IIS and not self.settings.keeps_iis_binding(model.name):
            model.iis_binding = entry.thumbprint
            model.iis_require_ssl = not call.params.get("DoNotRequireSsl", False)
        # POP/IMAP present the certificate matching their configured name; Enable points the name at this
        # certificate's subject (lab choice, UNCONFIRMED how 2010 records it).
        if flags & Services.POP:
            model.pop_name, model.pop_binding = cn, entry.thumbprint
        if flags & Services.IMAP:
            model.imap_name, model.imap_binding = cn, entry.thumbprint
        entry.services |= flags

    def enable(self, call: CommandCall) -> None:
        self._check_server(call)
        flags = self._parse_services(call, call.params["Services"])
        with self.model.transaction():
            entry = self._lookup(call.params["Thumbprint"], (MY,))
            if entry is None:
                raise self._error(call, "thumbprint_not_found", thumbprint=call.params["Thumbprint"].upper())
            if not self._should_process(call, entry.thumbprint):
                return
            self._enable(call, entry, flags, bool(call.params.get("Force", False)))

    # --- Get -------------------------------------------------------------------------------------

    def get(self, call: CommandCall) -> None:
        self._check_server(call)
        with self.model.lock:
            if call.has("Thumbprint"):
                entry = self._lookup(call.params["Thumbprint"])
                if entry is None:
                    call.write_error(
                        self._error(call, "thumbprint_not_found", thumbprint=call.params["Thumbprint"].upper())
                    )
                    return
                found = [entry]
            elif call.has("Instance"):
                found = self._from_instance(call.params["Instance"])
            else:
                found = self.model.entries(MY) + self.model.entries(REQUEST)
            names = [n.lower() for n in call.params.get("DomainName", [])]
            for entry in found:
                if names and not self._matches_domain(entry, names):
                    continue
                call.write(self._output(entry))

    def _from_instance(self, instance: object) -> list[CertEntry]:
        thumb = None
        if isinstance(instance, LabObject):
            thumb = instance.get("Thumbprint")
            raw = instance.get("RawData")
            if thumb is None and isinstance(raw, bytes):
                thumb = pki.thumbprint(pki.parse_blob(raw, None).certs[0])
        entry = self._lookup(thumb) if isinstance(thumb, str) else None
        return [entry] if entry else []

    @staticmethod
    def _matches_domain(entry: CertEntry, names: list[str]) -> bool:
        for domain in (d.lower() for d in certificate_domains(entry)):
            for name in names:
                if domain == name or (domain.startswith("*.") and name.endswith(domain[1:])):
                    return True
        return False

    # --- New ---------------------------------------------------------------------------------------

    def new(self, call: CommandCall) -> None:
        self._check_server(call)
        p = call.params
        key_size = p.get("KeySize", 2048)
        if key_size not in KEY_SIZES:
            raise self._error(call, "invalid_key_size", value=key_size)
        subject_text = p.get("SubjectName") or f"CN={self.model.name}"
        try:
            subject = parse_dn(subject_text)
        except DNParseError as exc:
            raise self._error(call, "invalid_subject_name", subject=subject_text, reason=str(exc)) from None
        domains = self._domains(call)
        friendly = p.get("FriendlyName") or DEFAULT_FRIENDLY_NAME
        exportable = bool(p.get("PrivateKeyExportable", False))
        if p.get("GenerateRequest"):
            self._new_request(call, subject, domains, key_size, friendly, exportable)
        else:
            self._new_self_signed(call, subject, domains, key_size, friendly, exportable)

    def _domains(self, call: CommandCall) -> list[str]:
        p = call.params
        domains = [d.strip() for d in p.get("DomainName", []) if d.strip()]
        for domain in domains:
            if not valid_domain(domain):
                raise self._error(call, "invalid_domain_name", domain=domain)
        if p.get("IncludeServerNetBIOSName"):
            domains.append(self.model.name)
        if p.get("IncludeServerFQDN"):
            domains.append(self.model.fqdn)
        if p.get("IncludeAcceptedDomains"):
            domains.append(self._domain())
        if p.get("IncludeAutoDiscover"):
            domains.append(f"autodiscover.{self._domain()}")
        if not domains:
            domains = [self.model.name, self.model.fqdn]
        unique: list[str] = []
        for domain in domains:
            if domain.lower() not in {u.lower() for u in unique}:
                unique.append(domain)
        return unique

    def _new_request(
        self, call: CommandCall, subject: x509.Name, domains: list[str], key_size: int, friendly: str,
        exportable: bool,
    ) -> None:
        if not self._should_process(call, str(subject)):
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        csr = pki.build_request(key, subject, domains, self.settings.request_signature_hash)
        csr_der = csr.public_bytes(serialization.Encoding.DER)
        # Windows keeps a pending request as a stub certificate in the REQUEST store; its hash is
        # the Thumbprint Exchange shows for the request.
        stub = pki.self_signed(key, subject, domains, self.model.clock() - timedelta(minutes=5), 365)
        entry = CertEntry(
            REQUEST, pki.der(stub), pki.key_pem(key), exportable=exportable, friendly_name=friendly,
            csr_der=csr_der,
        )
        text = pki.armour(csr_der, self.settings.request_pem_header)
        binary = bool(call.params.get("BinaryEncoded"))
        with self.model.transaction():
            if self.model.version == "2007" and call.has("Path"):
                self._write_file(
                    call, call.params["Path"], csr_der if binary else text.encode("ascii"),
                    bool(call.params.get("Force")),
                )
                self.model.put(entry)
                call.write(self._output(entry))
                return
            self.model.put(entry)
        call.write(binary_file_data(csr_der) if binary else text)

    def _new_self_signed(
        self, call: CommandCall, subject: x509.Name, domains: list[str], key_size: int, friendly: str,
        exportable: bool,
    ) -> None:
        flags = (
            self._parse_services(call, call.params["Services"])
            if call.has("Services")
            else int(Services.IMAP | Services.POP | Services.SMTP)
        )
        if not self._should_process(call, str(subject)):
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        days = 1825 if self.model.version == "2010" else 365
        cert = pki.self_signed(key, subject, domains, self.model.clock() - timedelta(minutes=5), days)
        entry = CertEntry(MY, pki.der(cert), pki.key_pem(key), exportable=exportable, friendly_name=friendly)
        with self.model.transaction():
            self.model.put(entry)
            self.model.put(CertEntry(ROOT, pki.der(cert), root_origin=ORIGIN_REGISTRY))
            try:
                self._enable(call, entry, flags, bool(call.params.get("Force", False)))
            except LabError:
                self.model.remove(MY, entry.thumbprint)
                self.model.remove(ROOT, entry.thumbprint)
                raise
            call.write(self._output(entry))

    # --- Import ------------------------------------------------------------------------------------

    def _import_data(self, call: CommandCall) -> bytes:
        p = call.params
        if call.has("FileData"):
            return bytes(p["FileData"])
        if call.has("Path"):
            full = self._resolve_path(call, p["Path"])
            data = self.model.fs.read(full)
            if data is None:
                raise self._error(call, "file_not_found", path=full)
            return data
        instance = p.get("Instance") or []
        return "\r\n".join(instance).encode("ascii", "replace")

    def import_(self, call: CommandCall) -> None:
        self._check_server(call)
        data = self._import_data(call)
        secret = call.params.get("Password")
        password = secret.reveal() if isinstance(secret, Secret) else None
        try:
            parsed = pki.parse_blob(data, password)
        except pki.PfxEncryptionUnsupported:
            raise self._error(call, "pfx_unsupported_encryption") from None
        except pki.PfxPasswordError:
            raise self._error(call, "pfx_wrong_password") from None
        except pki.FormatError:
            raise self._error(call, "unknown_format") from None
        if not parsed.certs:
            raise self._error(call, "unknown_format")
        leaf = pki.leaf_of(parsed.certs, parsed.key)
        thumb = pki.thumbprint(leaf)
        if not self._should_process(call, thumb):
            return
        with self.model.transaction():
            if self.model.find(MY, thumb) is not None:
                raise self._error(call, "already_exists", thumbprint=thumb)
            friendly = call.params.get("FriendlyName")
            if parsed.is_pfx and parsed.key is not None:
                if self.model.version == "2010":
                    exportable = bool(call.params.get("PrivateKeyExportable", False))
                else:
                    exportable = self.settings.pfx_import_exportable_2007
                entry = CertEntry(
                    MY, pki.der(leaf), pki.key_pem(parsed.key), exportable=exportable,
                    friendly_name=friendly or parsed.friendly_name or DEFAULT_FRIENDLY_NAME,
                )
            else:
                self._check_root(call, leaf, parsed.certs)
                entry = self._complete_request(leaf, friendly)
            self.model.put(entry)
            # Intermediates that came along (p7b chain, PFX bag) go to \CA, as CryptoAPI's import does;
            # a self-signed root in the bag is not trusted by being imported.
            for other in parsed.certs:
                if other is leaf or pki.is_self_signed(other):
                    continue
                if self.model.find(CA, pki.thumbprint(other)) is None:
                    self.model.put(CertEntry(CA, pki.der(other)))
            call.write(self._output(entry))

    def _check_root(self, call: CommandCall, leaf: x509.Certificate, delivered: list[x509.Certificate]) -> None:
        """A CA response must chain to a root this server trusts (setting import_requires_trusted_root)."""
        if not self.settings.import_requires_trusted_root or pki.is_self_signed(leaf):
            return
        extra = tuple(c for c in delivered if c is not leaf and not pki.is_self_signed(c))
        trust = self.model.trust(leaf, extra)
        if not trust.root_origin:
            top = trust.chain[-1]
            raise self._error(call, "untrusted_root", thumbprint=pki.thumbprint(leaf),
                              root=format_name(top.issuer))

    def _complete_request(self, leaf: x509.Certificate, friendly: str | None) -> CertEntry:
        """A CA response: takes over the private key of the pending request with the same public key."""
        wanted = pki.spki(leaf)
        for request in self.model.entries(REQUEST):
            if pki.spki(request.cert) == wanted:
                self.model.remove(REQUEST, request.thumbprint)
                return CertEntry(
                    MY, pki.der(leaf), request.key_pem, exportable=request.exportable,
                    friendly_name=friendly or request.friendly_name,
                )
        return CertEntry(MY, pki.der(leaf), None, exportable=False, friendly_name=friendly or "")

    # --- Export --------------------------------------------------------------------------------------

    def export(self, call: CommandCall) -> None:
        self._check_server(call)
        p = call.params
        with self.model.transaction():
            entry = self._lookup(p["Thumbprint"])
            if entry is None:
                raise self._error(call, "thumbprint_not_found", thumbprint=p["Thumbprint"].upper())
            secret = p.get("Password")
            if entry.store == REQUEST:
                assert entry.csr_der is not None
                data, text = entry.csr_der, pki.armour(entry.csr_der, self.settings.request_pem_header)
            elif isinstance(secret, Secret):
                if not entry.has_key:
                    raise self._error(call, "export_no_private_key", thumbprint=entry.thumbprint)
                if not entry.exportable:
                    raise self._error(call, "export_not_exportable", thumbprint=entry.thumbprint)
                chain = []
                if self.settings.export_includes_chain:
                    chain = [c for c in self.model.trust(entry.cert).chain[1:] if not pki.is_self_signed(c)]
                data = pki.build_pfx(
                    entry.key(), entry.cert, chain, secret.reveal(), entry.friendly_name,
                    self.settings.pfx_kdf_rounds,
                )
                text = pki.base64_lines(data)
            elif entry.has_key and self.settings.export_keyed_needs_password:
                raise self._error(call, "export_needs_password", thumbprint=entry.thumbprint)
            else:
                # A certificate without a key (or the setting off): the certificate alone.
                data, text = entry.der, pki.armour(entry.der, "CERTIFICATE")
            binary = bool(p.get("BinaryEncoded"))
            if self.model.version == "2007" and call.has("Path"):
                self._write_file(call, p["Path"], data if binary else text.encode("ascii"), bool(p.get("Force")))
                return
        call.write(binary_file_data(data) if binary else text)

    # --- Remove --------------------------------------------------------------------------------------

    def remove(self, call: CommandCall) -> None:
        self._check_server(call)
        with self.model.transaction():
            entry = self._lookup(call.params["Thumbprint"])
            if entry is None:
                raise self._error(call, "thumbprint_not_found", thumbprint=call.params["Thumbprint"].upper())
            # Only the default SMTP certificate (internal transport) is refused; an IIS/POP/IMAP-bound one goes,
            # and the clients of those services break (issue 16; the lab refused them before).
            if entry.store == MY and self.model.default_smtp == entry.thumbprint:
                raise self._error(
                    call, "cert_in_use", thumbprint=entry.thumbprint, services=services_text(int(Services.SMTP))
                )
            if call.params.get("WhatIf") is True:
                return
            # Remove-* has ConfirmImpact High: it prompts unless -Confirm:$false.
            if call.params.get("Confirm") is not False and not self._confirm(
                    call, self.settings.text("remove_prompt", thumbprint=entry.thumbprint)):
                return
            self.model.remove(entry.store, entry.thumbprint)

    # --- registration --------------------------------------------------------------------------------

    def register(self, registry: Registry) -> None:
        version = self.model.version
        if version == "2007":
            visibility: dict[str, object] = {"snapin": EMS_2007_SNAPIN}
        else:
            visibility = {"configurations": (EXCHANGE_CONFIGURATION,)}
        new_params, new_default = params.new_certificate(version)
        import_params, import_default = params.import_certificate(version)
        get_params, get_default = params.get_certificate(version)
        table = [
            ("New-ExchangeCertificate", self.new, new_params, new_default),
            ("Import-ExchangeCertificate", self.import_, import_params, import_default),
            ("Export-ExchangeCertificate", self.export, params.export_certificate(version), None),
            ("Enable-ExchangeCertificate", self.enable, params.enable_certificate(version, self.settings), None),
            ("Get-ExchangeCertificate", self.get, get_params, get_default),
            ("Remove-ExchangeCertificate", self.remove, params.remove_certificate(version), None),
        ]
        for name, handler, parameters, default_set in table:
            registry.register(
                CommandSpec(
                    name=name,
                    handler=handler,
                    parameters=parameters,
                    implementing_type=implementing_type(name),
                    default_set=default_set,
                    **visibility,  # type: ignore[arg-type]
                )
            )
