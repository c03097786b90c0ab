"""The Windows machine behind one emulated Exchange server: certificate stores, services, files.

State changes happen inside `transaction()`, which holds the server's lock and writes the state
directory once at the end, so a concurrent reader never sees half an Enable and a restart
finds the last completed command's result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntFlag
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.lab.exchange import pki, store
from orchestrator.lab.exchange.webconfig import WebConfig
from orchestrator.lab.exchange.winfs import WindowsFileSystem
from orchestrator.lab.exchange.x500 import common_name, parse_dn

MY, CA, ROOT, REQUEST = "My", "CA", "Root", "REQUEST"
STORES = (MY, CA, ROOT, REQUEST)

# Where a trusted root came from: the server's own Root store, or a root-program (third-party) root.
ORIGIN_REGISTRY = "registry"
ORIGIN_THIRD_PARTY = "third_party"

DEFAULT_FRIENDLY_NAME = "Microsoft Exchange"
# IIS's Default Web Site folder exists on every Exchange server (the Client Access role installs IIS).
DEFAULT_DIRECTORIES = ("C:\\", "C:\\Windows", "C:\\Windows\\Temp", "C:\\Users", "C:\\Program Files",
                       "C:\\inetpub", "C:\\inetpub\\wwwroot")


class Services(IntFlag):
    """Microsoft.Exchange.Data.Directory.SystemConfiguration.AllowedServices (values per .NET)."""

    NONE = 0
    IMAP = 1
    POP = 2
    UM = 4
    IIS = 8
    SMTP = 16
    FEDERATION = 32


SERVICE_NAMES: dict[Services, str] = {
    Services.IMAP: "IMAP",
    Services.POP: "POP",
    Services.UM: "UM",
    Services.IIS: "IIS",
    Services.SMTP: "SMTP",
    Services.FEDERATION: "Federation",
}

# The default self-signed certificate's services. Exchange 2010 shows `IP.WS.` (IMAP, POP, IIS, SMTP)
# for it in the seed; the lab uses the same on 2007 (2007's value is UNCONFIRMED).
DEFAULT_CERT_SERVICES = Services.IMAP | Services.POP | Services.IIS | Services.SMTP


def services_text(flags: int) -> str:
    if not flags:
        return "None"
    return ", ".join(name for flag, name in SERVICE_NAMES.items() if flags & flag)


@dataclass
class CertEntry:
    """One certificate in one store (a pending request is a stub certificate in REQUEST)."""

    store: str
    der: bytes
    key_pem: bytes | None = None
    exportable: bool = False
    friendly_name: str = ""
    services: int = 0
    root_origin: str = ""
    csr_der: bytes | None = None

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def thumbprint(self) -> str:
        return pki.thumbprint(self.cert)

    @property
    def has_key(self) -> bool:
        return self.key_pem is not None

    def key(self) -> rsa.RSAPrivateKey:
        assert self.key_pem is not None
        return pki.load_key(self.key_pem)


@dataclass
class Trust:
    """Result of building the chain of a certificate on this server."""

    chain: list[x509.Certificate]  # leaf first; ends at the trusted root when trusted
    root_origin: str  # "" when no trusted root was reached
    date_valid: bool


@dataclass(eq=False)  # identity semantics: a model is one machine (hashable, usable as a key)
class ExchangeServerModel:
    name: str
    version: str  # "2007" | "2010"
    fqdn: str
    state_dir: Path | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    fs: WindowsFileSystem = field(default_factory=WindowsFileSystem)
    default_smtp: str | None = None
    # IIS's Default Web Site requires SSL once Enable -Services IIS ran without -DoNotRequireSsl.
    iis_require_ssl: bool = False
    # Services are a computed view (issue 16), from these: the certificate bound to the Default Web Site; the
    # names POP and IMAP are configured to present (Set-POPSettings/Set-IMAPSettings -X509CertificateName; None:
    # the server's FQDN) and the certificate each was last enabled with.
    iis_binding: str | None = None
    pop_name: str | None = None
    imap_name: str | None = None
    pop_binding: str | None = None
    imap_binding: str | None = None
    # Virtual directories, Autodiscover URI, Outlook Anywhere, receive connectors (issue 17): made with the fresh-install
    # defaults the first time a client-access cmdlet runs (clientaccess.py), saved with the rest from then on.
    web: WebConfig | None = None
    # What the machine's surroundings decide (set from LabSettings by build_registry, not saved): roots Windows
    # knows of without trusting them (root-program roots not yet in \Root: a chain ending there is Untrusted, not
    # Invalid), and whether the CA's revocation lists are out of reach.
    known_roots: tuple[x509.Certificate, ...] = ()
    revocation_offline: bool = False
    _entries: dict[str, dict[str, CertEntry]] = field(default_factory=lambda: {s: {} for s in STORES})
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if self.version not in ("2007", "2010"):
            raise ValueError(f"Exchange version must be '2007' or '2010', not {self.version!r}")

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path | str | None,
        name: str,
        version: str,
        fqdn: str,
        clock: Callable[[], datetime] | None = None,
        directories: tuple[str, ...] = DEFAULT_DIRECTORIES,
    ) -> ExchangeServerModel:
        """Reload the server from `state_dir`, or build a fresh one (default self-signed cert) there.

        `state_dir=None` keeps everything in memory (nothing survives the process).
        """
        path = Path(state_dir) if state_dir is not None else None
        model = cls(name=name, version=version, fqdn=fqdn, state_dir=path)
        if clock is not None:
            model.clock = clock
        saved = store.read_state(path) if path is not None else None
        if saved is not None:
            model._restore(saved)
            return model
        with model.transaction():
            for directory in directories:
                model.fs.mkdir(directory)
            model._create_default_certificate()
        return model

    def _create_default_certificate(self) -> None:
        """Exchange setup's self-signed certificate: CN=<server>, SANs server name + FQDN.

        Setup also places it in the Trusted Root store, which is why it shows Status Valid.
        Validity: 5 years on 2010, 1 year on 2007 (setup defaults as commonly reported).
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        days = 1825 if self.version == "2010" else 365
        cert = pki.self_signed(
            key, parse_dn(f"CN={self.name}"), [self.name, self.fqdn], self.clock() - timedelta(days=1), days
        )
        entry = CertEntry(
            MY, pki.der(cert), pki.key_pem(key), exportable=False,
            friendly_name=DEFAULT_FRIENDLY_NAME, services=int(DEFAULT_CERT_SERVICES),
        )
        self.put(entry)
        self.put(CertEntry(ROOT, pki.der(cert), root_origin=ORIGIN_REGISTRY))
        self.default_smtp = self.iis_binding = self.pop_binding = self.imap_binding = entry.thumbprint

    # --- transactions and persistence ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[ExchangeServerModel]:
        with self.lock:
            yield self
            self.save()

    def save(self) -> None:
        if self.state_dir is None:
            return
        with self.lock:
            blobs = store.BlobWriter(self.state_dir)
            entries: list[dict[str, Any]] = []
            for store_name in STORES:
                for entry in self._entries[store_name].values():
                    row: dict[str, Any] = {
                        "store": entry.store,
                        "thumbprint": entry.thumbprint,
                        "cert": blobs.put("certs", entry.der, ".der"),
                        "exportable": entry.exportable,
                        "friendly_name": entry.friendly_name,
                        "services": entry.services,
                        "root_origin": entry.root_origin,
                    }
                    if entry.key_pem is not None:
                        row["key"] = blobs.put("keys", entry.key_pem, ".pem")
                    if entry.csr_der is not None:
                        row["csr"] = blobs.put("csrs", entry.csr_der, ".der")
                    entries.append(row)
            files = [
                {"path": shown, "blob": blobs.put("files", data, ".bin")}
                for shown, data in self.fs.files.values()
            ]
            state = {
                "server": {"name": self.name, "version": self.version, "fqdn": self.fqdn},
                "default_smtp": self.default_smtp,
                "iis_require_ssl": self.iis_require_ssl,
                "bindings": {"iis": self.iis_binding, "pop": self.pop_binding, "imap": self.imap_binding,
                             "pop_name": self.pop_name, "imap_name": self.imap_name},
                "entries": entries,
                "directories": sorted(self.fs.dirs.values(), key=str.lower),
                "files": files,
            }
            if self.web is not None:
                state["client_access"] = self.web.to_json()
            store.write_state(self.state_dir, state)
            blobs.prune(("certs", "keys", "csrs", "files"))

    def _restore(self, saved: dict[str, Any]) -> None:
        assert self.state_dir is not None
        server = saved["server"]
        if server["name"].lower() != self.name.lower() or server["version"] != self.version:
            raise ValueError(
                f"{self.state_dir}: holds {server['name']} (Exchange {server['version']}), "
                f"not {self.name} (Exchange {self.version})"
            )
        self.fqdn = server.get("fqdn", self.fqdn)
        self.default_smtp = saved.get("default_smtp")
        self.iis_require_ssl = bool(saved.get("iis_require_ssl", False))
        for row in saved["entries"]:
            entry = CertEntry(
                store=row["store"],
                der=store.read_blob(self.state_dir, row["cert"]),
                key_pem=store.read_blob(self.state_dir, row["key"]) if row.get("key") else None,
                exportable=row["exportable"],
                friendly_name=row["friendly_name"],
                services=row["services"],
                root_origin=row["root_origin"],
                csr_der=store.read_blob(self.state_dir, row["csr"]) if row.get("csr") else None,
            )
            self._entries[entry.store][entry.thumbprint] = entry
        bindings = saved.get("bindings")
        if bindings is None:  # a state directory from before the computed view: the owners its flags name
            def first(flag: Services) -> str | None:
                return next((e.thumbprint for e in self._entries[MY].values() if e.services & flag), None)

            bindings = {"iis": first(Services.IIS), "pop": first(Services.POP), "imap": first(Services.IMAP)}
        self.iis_binding, self.pop_binding, self.imap_binding = bindings["iis"], bindings["pop"], bindings["imap"]
        self.pop_name, self.imap_name = bindings.get("pop_name"), bindings.get("imap_name")
        if saved.get("client_access") is not None:
            self.web = WebConfig.from_json(saved["client_access"])
        for directory in saved["directories"]:
            self.fs.dirs[directory.lower()] = directory
        for item in saved["files"]:
            self.fs.files[item["path"].lower()] = (item["path"], store.read_blob(self.state_dir, item["blob"]))

    # --- stores ---------------------------------------------------------------------------------

    def entries(self, store_name: str) -> list[CertEntry]:
        with self.lock:
            return list(self._entries[store_name].values())

    def find(self, store_name: str, thumbprint: str) -> CertEntry | None:
        with self.lock:
            return self._entries[store_name].get(thumbprint.strip().upper())

    def put(self, entry: CertEntry) -> CertEntry:
        with self.lock:
            self._entries[entry.store][entry.thumbprint] = entry
            return entry

    def remove(self, store_name: str, thumbprint: str) -> None:
        with self.lock:
            self._entries[store_name].pop(thumbprint.upper(), None)
            if store_name == MY:
                for attr in ("default_smtp", "iis_binding", "pop_binding", "imap_binding"):
                    if getattr(self, attr) == thumbprint.upper():
                        setattr(self, attr, None)

    def trust_third_party_roots(self, pems: tuple[bytes, ...]) -> None:
        """Install root-program roots (the lab CA's root) into \\Root, marked third-party."""
        with self.transaction():
            for pem in pems:
                for cert in x509.load_pem_x509_certificates(pem):
                    existing = self.find(ROOT, pki.thumbprint(cert))
                    if existing is None:
                        self.put(CertEntry(ROOT, pki.der(cert), root_origin=ORIGIN_THIRD_PARTY))

    # --- trust ------------------------------------------------------------------------------------

    def trust(self, cert: x509.Certificate, extra: tuple[x509.Certificate, ...] = ()) -> Trust:
        """Build the chain from \\CA and \\Root, as CryptoAPI would for Exchange's Status; `extra` are
        intermediates that came with the certificate (a p7b being imported)."""
        now = self.clock()
        chain = [cert]
        origin = ""
        with self.lock:
            roots = list(self._entries[ROOT].values())
            intermediates = [e.cert for e in self._entries[CA].values()] + list(extra)
        current = cert
        for _ in range(10):
            root = next((r for r in roots if r.der == pki.der(current)), None)
            if root is not None:
                origin = root.root_origin or ORIGIN_REGISTRY
                break
            if pki.is_self_signed(current):
                break
            issuer = next((r.cert for r in roots if pki.issued_by(current, r.cert)), None)
            if issuer is None:
                issuer = next((c for c in intermediates if pki.issued_by(current, c)), None)
            if issuer is None:
                break
            chain.append(issuer)
            current = issuer
        date_valid = all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain)
        return Trust(chain=chain, root_origin=origin, date_valid=date_valid)

    # --- services --------------------------------------------------------------------------------

    def owner(self, service: Services) -> CertEntry | None:
        """The certificate that currently serves `service` (SMTP: the default SMTP certificate; POP/IMAP: the one
        last enabled while its names match the configured name, else any matching one with a key)."""
        with self.lock:
            my = self._entries[MY]
            if service == Services.SMTP:
                return my.get(self.default_smtp or "")
            if service == Services.IIS:
                return my.get(self.iis_binding or "")
            if service in (Services.POP, Services.IMAP):
                chosen = my.get((self.pop_binding if service == Services.POP else self.imap_binding) or "")
                if chosen is not None and chosen.has_key and self.services_of(chosen) & service:
                    return chosen
                return next((e for e in my.values() if e.has_key and self.services_of(e) & service), None)
            return next((e for e in my.values() if e.services & service), None)

    def services_of(self, entry: CertEntry) -> int:
        """What Get-ExchangeCertificate shows in Services (issue 16): computed, not a stored owner. IIS on the
        certificate bound to the site; POP/IMAP on every certificate whose names match the service's configured
        name; SMTP on 2010 on any certificate whose key the transport can read (one ever enabled for SMTP, POP or
        IMAP: Enable grants it), on 2007 on the default SMTP certificate (lab choice, UNCONFIRMED); UM and
        Federation as enabled."""
        if entry.store != MY:
            return 0
        flags = entry.services & int(Services.UM | Services.FEDERATION)
        if entry.thumbprint == self.iis_binding:
            flags |= int(Services.IIS)
        names = [n.lower() for n in pki.dns_names(entry.cert)]
        cn = common_name(entry.cert.subject)
        if cn:
            names.append(cn.lower())
        for service, configured in ((Services.POP, self.pop_name), (Services.IMAP, self.imap_name)):
            if _matches(names, (configured or self.fqdn).lower()):
                flags |= int(service)
        if self.version == "2007":
            if entry.thumbprint == self.default_smtp:
                flags |= int(Services.SMTP)
        elif entry.has_key and entry.services & int(Services.SMTP | Services.POP | Services.IMAP):
            flags |= int(Services.SMTP)
        return flags


def _matches(names: list[str], wanted: str) -> bool:
    return any(n == wanted or (n.startswith("*.") and wanted.endswith(n[1:]) and wanted.count(".") == n.count("."))
               for n in names)
