"""certutil.exe -addstore, run as a native program (WinRS cmd shell)."""

from __future__ import annotations

from cryptography import x509

from orchestrator.lab.exchange import pki
from orchestrator.lab.exchange.model import CA, MY, ORIGIN_REGISTRY, REQUEST, ROOT, CertEntry, ExchangeServerModel
from orchestrator.lab.exchange.winfs import PathError, normalize
from orchestrator.lab.exchange.x500 import format_name
from orchestrator.lab.registry import NativeResult, Session

STORE_TITLES = {
    MY: "Personal",
    CA: "Intermediate Certification Authorities",
    ROOT: "Trusted Root Certification Authorities",
    REQUEST: "Certificate Enrollment Requests",
}
# certutil.exe output. The success lines are UNCONFIRMED (reference §6); the failure lines are a
# public example (CRYPT_E_NO_MATCH) or Windows' standard message texts.
CERTUTIL_TEXTS = {
    "store_header": '{store} "{title}"',
    "added": 'Certificate "{subject}" added to store.',
    "already": 'Certificate "{subject}" already in store.',
    "success": "CertUtil: -addstore command completed successfully.",
    "no_match": "CertUtil: -addstore command FAILED: 0x80092009 (-2146885623 CRYPT_E_NO_MATCH)\r\n"
    "CertUtil: Cannot find the requested object.",
    "file_not_found": "CertUtil: -addstore command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n"
    "CertUtil: The system cannot find the file specified.",
    "bad_args": "CertUtil: -addstore command FAILED: 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)\r\n"
    "CertUtil: The parameter is incorrect.",
    "unknown_verb": "CertUtil: Unknown arg: {arg}\r\nUsage:\r\n  CertUtil [Options] -addstore CertificateStoreName InFile",
}
CERTUTIL_EXIT = {"no_match": -2146885623, "file_not_found": -2147024894, "bad_args": -2147024809}



def _cwd(session: Session) -> str:
    user = session.username.split("\\")[-1].split("@")[0] or "Administrator"
    return f"C:\\Users\\{user}"


class Certutil:
    def __init__(self, model: ExchangeServerModel) -> None:
        self.model = model

    def __call__(self, args: list[str], session: Session) -> NativeResult:
        options = {a.lower() for a in args if a.startswith(("-", "/"))}
        rest = [a for a in args if not a.startswith(("-", "/"))]
        verbs = [a for a in args if a.lower().lstrip("-/") == "addstore"]
        unknown = [a for a in options if a.lstrip("-/") not in ("addstore", "f", "enterprise")]
        if unknown:
            return NativeResult(stdout=CERTUTIL_TEXTS["unknown_verb"].format(arg=sorted(unknown)[0]) + "\r\n",
                                exit_code=CERTUTIL_EXIT["bad_args"])
        if not verbs or len(rest) != 2:
            return NativeResult(stdout=CERTUTIL_TEXTS["bad_args"] + "\r\n", exit_code=CERTUTIL_EXIT["bad_args"])
        store_arg, file_arg = rest
        store = next((s for s in (MY, CA, ROOT) if s.lower() == store_arg.lower()), None)
        if store is None:
            return NativeResult(stdout=CERTUTIL_TEXTS["bad_args"] + "\r\n", exit_code=CERTUTIL_EXIT["bad_args"])
        try:
            path = normalize(file_arg, _cwd(session))
        except PathError:
            path = ""
        data = self.model.fs.read(path) if path else None
        if data is None:
            return NativeResult(stdout=CERTUTIL_TEXTS["file_not_found"] + "\r\n",
                                exit_code=CERTUTIL_EXIT["file_not_found"])
        try:
            parsed = pki.parse_blob(data, None)
        except (pki.FormatError, pki.PfxPasswordError, pki.PfxEncryptionUnsupported):
            parsed = None
        if parsed is None or parsed.is_pfx or not parsed.certs:
            return NativeResult(stdout=CERTUTIL_TEXTS["no_match"] + "\r\n", exit_code=CERTUTIL_EXIT["no_match"])
        lines = [CERTUTIL_TEXTS["store_header"].format(store=store, title=STORE_TITLES[store])]
        with self.model.transaction():
            for cert in parsed.certs:
                lines.append(self._add_to_store(store, cert, "-f" in options or "/f" in options))
        lines.append(CERTUTIL_TEXTS["success"])
        return NativeResult(stdout="\r\n".join(lines) + "\r\n", exit_code=0)

    def _add_to_store(self, store: str, cert: x509.Certificate, force: bool) -> str:
        subject = format_name(cert.subject)
        existing = self.model.find(store, pki.thumbprint(cert))
        if existing is not None and not force:
            return CERTUTIL_TEXTS["already"].format(subject=subject)
        if existing is None:
            origin = ORIGIN_REGISTRY if store == ROOT else ""
            self.model.put(CertEntry(store, pki.der(cert), root_origin=origin))
        return CERTUTIL_TEXTS["added"].format(subject=subject)

