"""Finalize the Exchange server's own CSR over ACME (RFC 8555) with certbot's `acme` library.

The request's key never leaves the server: the CSR PEM it made is all this sees. The state folder
(beside the journal, 0700) holds:

- `acme-account.key`: the account's RSA key (PEM, 0600), created on first use and reused;
- `acme-account.json`: {directory, uri} of the account registered with that key;
- `acme-order.json`: {directory, account, csr_sha256, order, placed, certificate}: the order URL is written
  before any challenge is answered, so a run killed at any point picks the same order up instead of
  opening a second one; `placed` lists the challenge responses put out (removed on the next run if a
  crash left them); `certificate` the URL of the issued certificate, so a run that crashed after
  issuance fetches that one instead of ordering again. A different CSR starts a new order.

Every wait is bounded (`deadline`); the library's own polling is given the same deadline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import josepy as jose
import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.acme_issue.errors import (
    AcmeAccountRefused,
    AcmeCsrRefused,
    AcmeError,
    AcmeNameRefused,
    AcmeUnreachable,
    AcmeValidationFailed,
)
from orchestrator.certs import IssuedCertificate, sort_delivery
from orchestrator.fileio import write_atomic

ACCOUNT_KEY = "acme-account.key"
ACCOUNT_FILE = "acme-account.json"
ORDER_FILE = "acme-order.json"
DEFAULT_TIMEOUT = 180.0
NETWORK_TIMEOUT = 30
USER_AGENT = "exmig (acme-python)"


class ChallengeResponder(Protocol):
    """Puts a challenge's response where the CA looks, and takes it away again.

    `challenge_type` is "dns-01" or "http-01". `place` and `remove` get the name being validated (without a
    wildcard's "*."), the challenge token and the key authorization (RFC 8555 §8.1); `remove` must not
    fail when the response is already gone. `ready` returns once the CA can see everything placed (DNS
    propagation) or raises an AcmeError."""

    challenge_type: str

    def place(self, name: str, token: str, key_authorization: str) -> None: ...

    def remove(self, name: str, token: str, key_authorization: str) -> None: ...

    def ready(self) -> None: ...


@dataclass(frozen=True)
class AcmeSettings:
    """What the playbook's `issuer: {type: acme}` says, with its secrets resolved (SecretStore).

    `ca_bundle`: the file that verifies the ACME server's HTTPS (None: the system's trust store)."""

    directory: str
    contact: str | None = None
    eab_kid: str | None = None
    eab_hmac: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class AcmeResult:
    issued: IssuedCertificate
    leaf_pem: str
    chain_pems: list[str]
    order_url: str
    resumed: bool  # the order was picked up from the state folder, not opened by this call


# --- files -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)


def account_key(state_dir: Path) -> jose.JWKRSA:
    """The account key from `state_dir`, created (0600) on first use."""
    path = state_dir / ACCOUNT_KEY
    if path.is_file():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AcmeError(f"{path}: not an RSA key; move it away and run again (a new account is made)")
        return jose.JWKRSA(key=key)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)
    return jose.JWKRSA(key=key)


def csr_digest(csr_pem: str) -> str:
    return hashlib.sha256(normalize_csr(csr_pem)).hexdigest()


def normalize_csr(csr_pem: str) -> bytes:
    """Exchange's 'NEW CERTIFICATE REQUEST' armour (and CRLF) as the PEM the library reads."""
    from orchestrator.issuance import load_csr

    return load_csr(csr_pem).public_bytes(serialization.Encoding.PEM)


# --- errors ----------------------------------------------------------------------------------------


def _csr_hash_name(csr_pem: bytes) -> str | None:
    try:
        algorithm = x509.load_pem_x509_csr(csr_pem).signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        return None
    return algorithm.name if algorithm is not None else None


def translate(error: messages.Error, stage: str, csr_pem: bytes | None = None, kid: str | None = None) -> AcmeError:
    """One line for an ACME problem document (RFC 8555 §6.7), by its type."""
    code = error.code or str(error.typ).rsplit(":", 1)[-1]
    detail = (error.detail or "").strip().rstrip(".")
    said = f"the CA says: {detail}" if detail else f"ACME error {code}"
    if code == "externalAccountRequired":
        return AcmeAccountRefused(f"the CA requires external account binding ({said}); set issuer.eab.kid and "
                                  "issuer.eab.hmac from the CA's account page")
    if stage == "account" and kid and (code in ("unauthorized", "malformed", "badSignatureAlgorithm")
                                       or "external account" in detail.lower()):
        which = f" (kid {kid})" if kid else ""
        return AcmeAccountRefused(f"the CA refused the external account binding{which} ({said}); check issuer.eab.kid "
                                  "and the HMAC key in issuer.eab.hmac (base64url, as the CA shows it)")
    if code in ("rejectedIdentifier", "unsupportedIdentifier", "caa") or (
            stage == "order" and code in ("malformed", "unauthorized", "rejectedIdentifier")):
        return AcmeNameRefused(f"the CA refuses to issue for this request's names ({said}); remove the name from "
                               "certificate.domains, or ask the CA (CAA records, its policy) to allow it")
    if code == "badCSR":
        hash_name = _csr_hash_name(csr_pem) if csr_pem else None
        if hash_name == "sha1":
            return AcmeCsrRefused(
                f"the CA refused the request because it is signed with SHA-1, as Exchange 2010's New-ExchangeCertificate "
                f"signs requests ({said}); make a SHA-256 request on the server (certreq -new with HashAlgorithm = "
                "SHA256 in the .inf) and give the CA's answer with issuer type files, or use a CA that accepts SHA-1 "
                "requests"
            )
        return AcmeCsrRefused(f"the CA refused the certificate request ({said}); check certificate.key_size and "
                              "certificate.domains against the CA's rules")
    if stage == "account" and code in ("invalidContact", "unsupportedContact"):
        return AcmeAccountRefused(f"the CA refused the account's contact ({said}); check issuer.contact")
    if stage == "account":
        return AcmeAccountRefused(f"the CA refused to register the account ({said}); check issuer.contact and issuer.eab")
    if code == "accountDoesNotExist":
        return AcmeAccountRefused(f"the CA does not know this account ({said}); remove {ACCOUNT_FILE} from the state "
                                  "folder to register again")
    if code == "rateLimited":
        return AcmeError(f"the CA's rate limit was reached ({said}); run again later")
    return AcmeError(f"the ACME CA refused the {stage} ({said})")


def _validation_error(authzrs: list[messages.AuthorizationResource], challenge_type: str) -> AcmeValidationFailed:
    for authzr in authzrs:
        for challb in authzr.body.challenges:
            if challb.error is not None:
                name = authzr.body.identifier.value
                detail = (challb.error.detail or challb.error.typ).strip().rstrip(".")
                where = ("the token under /.well-known/acme-challenge/ on the server the name points at (client_names)"
                         if challenge_type == "http-01" else f"the TXT record _acme-challenge.{name}")
                return AcmeValidationFailed(f"the CA could not validate {name} over {challenge_type} (the CA says: "
                                            f"{detail}); check {where}")
    return AcmeValidationFailed(f"the CA did not accept the {challenge_type} challenges")


# --- the flow --------------------------------------------------------------------------------------


class _Session:
    def __init__(self, settings: AcmeSettings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.key = account_key(state_dir)
        verify: Any = str(settings.ca_bundle) if settings.ca_bundle else True
        self.net = acme_client.ClientNetwork(self.key, verify_ssl=verify, user_agent=USER_AGENT,
                                             timeout=NETWORK_TIMEOUT)
        try:
            directory = acme_client.ClientV2.get_directory(settings.directory, self.net)
        except (requests.RequestException, acme_errors.Error, ValueError) as exc:
            raise AcmeUnreachable(f"issuer.directory: cannot read the ACME directory {settings.directory} "
                                  f"({_short(exc)}); check the URL and that the CA is reachable") from None
        self.client = acme_client.ClientV2(directory, self.net)

    def account(self) -> str:
        """The account URL: the stored one for this directory, else registered now (with EAB if given)."""
        path = self.state_dir / ACCOUNT_FILE
        saved = _read_json(path)
        thumbprint = jose.b64encode(self.key.thumbprint()).decode()
        # The account belongs to the key it was registered with: a replaced key file registers again.
        if (saved and saved.get("directory") == self.settings.directory and isinstance(saved.get("uri"), str)
                and saved.get("key_thumbprint") == thumbprint):
            self.net.account = messages.RegistrationResource(body=messages.Registration(), uri=saved["uri"])
            return str(saved["uri"])
        eab = None
        if self.settings.eab_kid and self.settings.eab_hmac:
            try:
                eab = messages.ExternalAccountBinding.from_data(self.key.public_key(), self.settings.eab_kid,
                                                                self.settings.eab_hmac, self.client.directory)
            except (ValueError, TypeError):
                raise AcmeAccountRefused("issuer.eab.hmac: the HMAC key is not base64url text; give it as the CA "
                                         "shows it") from None
        elif self.client.external_account_required():
            raise AcmeAccountRefused("the CA requires external account binding; set issuer.eab.kid and issuer.eab.hmac "
                                     "from the CA's account page")
        registration = messages.NewRegistration.from_data(
            email=self.settings.contact, terms_of_service_agreed=True, external_account_binding=eab)
        try:
            regr = self.client.new_account(registration)
            uri = regr.uri
        except acme_errors.ConflictError as exc:
            uri = str(exc.location)  # this key has an account already
            self.net.account = messages.RegistrationResource(body=messages.Registration(), uri=uri)
        except messages.Error as exc:
            raise translate(exc, "account", kid=self.settings.eab_kid) from None
        assert uri is not None
        _write_json(path, {"directory": self.settings.directory, "uri": uri, "key_thumbprint": thumbprint})
        return uri

    def post_as_get(self, url: str) -> requests.Response:
        return self.net.post(url, None, new_nonce_url=self.client.directory["newNonce"])

    def order_resource(self, url: str, csr_pem: bytes) -> messages.OrderResource:
        body = messages.Order.from_json(self.post_as_get(url).json())
        authzrs = [messages.AuthorizationResource(body=messages.Authorization.from_json(self.post_as_get(a).json()),
                                                  uri=a) for a in body.authorizations]
        return messages.OrderResource(body=body, uri=url, authorizations=authzrs, csr_pem=csr_pem)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _pending_challenges(orderr: messages.OrderResource, challenge_type: str) -> list[tuple[str, messages.ChallengeBody]]:
    out = []
    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_VALID:
            continue
        name = authzr.body.identifier.value
        chosen = next((c for c in authzr.body.challenges if c.chall.typ == challenge_type), None)
        if chosen is None:
            offered = ", ".join(sorted({c.chall.typ for c in authzr.body.challenges})) or "none"
            raise AcmeValidationFailed(f"the CA offers no {challenge_type} challenge for {name} (it offers {offered}); "
                                       "set issuer.challenge to one of those")
        out.append((name, chosen))
    return out


def issue(csr_pem: str, settings: AcmeSettings, state_dir: Path, responder: ChallengeResponder,
          log: Callable[[str], None] = lambda _line: None) -> AcmeResult:
    """Finalize `csr_pem` over ACME; the chain the CA sent comes back leaf first, as issuance.py's issuers return it.

    Resumes the order in `state_dir` when it is for this CSR at this directory; removes every challenge
    response it placed, also when it fails. Every failure is an AcmeError (one line)."""
    try:
        return _issue(csr_pem, settings, state_dir, responder, log)
    except requests.RequestException as exc:
        raise AcmeUnreachable(f"the ACME CA at {settings.directory} stopped answering ({_short(exc)}); run again (the "
                              "same order is picked up)") from None
    except messages.Error as exc:  # a problem document (a subclass of acme's Error: first)
        raise translate(exc, "request") from None
    except acme_errors.Error as exc:
        raise AcmeError(f"the ACME CA's answer was not understood ({_short(exc)}); run again (the same order is "
                        "picked up)") from None


def preflight(settings: AcmeSettings, state_dir: Path, names: list[str]) -> str:
    """Before the run changes any server: the directory answers, the account exists or is registered (EAB is
    checked here), and the CA takes an order for `names` (a name it refuses is refused now). That order is kept
    in the state folder and is the one the issue step finalizes (no second order). Returns the order URL."""
    try:
        return _preflight(settings, Path(state_dir), names)
    except requests.RequestException as exc:
        raise AcmeUnreachable(f"the ACME CA at {settings.directory} stopped answering ({_short(exc)}); run "
                              "again") from None
    except messages.Error as exc:
        raise translate(exc, "order") from None


def _identifiers(names: list[str]) -> list[str]:
    return sorted({n.lower() for n in names})


def _preflight(settings: AcmeSettings, state_dir: Path, names: list[str]) -> str:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    session = _Session(settings, state_dir)
    account = session.account()
    order_path = state_dir / ORDER_FILE
    state = _read_json(order_path) or {}
    wanted = _identifiers(names)
    if (state.get("directory") == settings.directory and state.get("account") == account
            and state.get("identifiers") == wanted and isinstance(state.get("order"), str)
            and not state.get("certificate")):
        try:
            body = messages.Order.from_json(session.post_as_get(state["order"]).json())
            if body.status != messages.STATUS_INVALID:
                return str(state["order"])  # an earlier run's order, still good: not a second one
        except (messages.Error, acme_errors.Error, requests.RequestException, ValueError):
            pass
    order = messages.NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in wanted])
    response = session.net.post(session.client.directory["newOrder"], order,
                                new_nonce_url=session.client.directory["newNonce"])
    url = response.headers.get("Location")
    if not url:
        raise AcmeError(f"the ACME CA at {settings.directory} created an order without a URL; run again")
    _write_json(order_path, {"directory": settings.directory, "account": account, "identifiers": wanted,
                             "csr_sha256": None, "order": url, "placed": []})
    return str(url)


def _issue(csr_pem: str, settings: AcmeSettings, state_dir: Path, responder: ChallengeResponder,
           log: Callable[[str], None]) -> AcmeResult:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    csr = normalize_csr(csr_pem)
    digest = hashlib.sha256(csr).hexdigest()
    deadline = dt.datetime.now() + dt.timedelta(seconds=settings.timeout)
    session = _Session(settings, state_dir)
    account = session.account()
    order_path = state_dir / ORDER_FILE
    state = _read_json(order_path) or {}
    same = (state.get("directory") == settings.directory and state.get("account") == account
            and isinstance(state.get("order"), str)
            # this CSR's order, or the order the preflight made for its names (finalized with this CSR now)
            and (state.get("csr_sha256") == digest or (state.get("csr_sha256") is None
                                                        and not state.get("certificate"))))
    _clean_leftovers(state, responder, log)
    state["placed"] = []
    orderr: messages.OrderResource | None = None
    resumed = False
    if same:
        try:
            orderr = session.order_resource(state["order"], csr)
            resumed = orderr.body.status != messages.STATUS_INVALID
        except (messages.Error, acme_errors.Error, requests.RequestException, ValueError):
            orderr = None  # expired or unknown to the CA now: a new order
        if orderr is not None and not resumed:
            orderr = None
        if orderr is not None and state.get("csr_sha256") is None:
            state["csr_sha256"] = digest  # the preflight's order now belongs to this CSR
            _write_json(order_path, state)
    if orderr is None:
        try:
            orderr = session.client.new_order(csr)
        except messages.Error as exc:
            raise translate(exc, "order", csr) from None
        state = {"directory": settings.directory, "account": account, "csr_sha256": digest, "order": orderr.uri,
                 "placed": []}
        _write_json(order_path, state)
        log(f"ACME order {orderr.uri}")
    else:
        log(f"ACME order {orderr.uri} resumed ({orderr.body.status})")
    assert orderr.uri is not None
    try:
        orderr = _validate(session, orderr, responder, state, order_path, deadline)
        orderr = _finalize(session, orderr, deadline, csr)
    finally:
        _remove_placed(state, responder, order_path, log)
    assert orderr.fullchain_pem is not None
    issued = _parse_chain(orderr.fullchain_pem)
    state["certificate"] = orderr.body.certificate
    _write_json(order_path, state)
    leaf_pem = issued.leaf.public_bytes(serialization.Encoding.PEM).decode()
    chain = [c.public_bytes(serialization.Encoding.PEM).decode() for c in issued.intermediates]
    return AcmeResult(issued, leaf_pem, chain, orderr.uri, resumed)


def _validate(session: _Session, orderr: messages.OrderResource, responder: ChallengeResponder,
              state: dict[str, Any], order_path: Path, deadline: dt.datetime) -> messages.OrderResource:
    if orderr.body.status not in (messages.STATUS_PENDING,):
        return orderr
    pending = _pending_challenges(orderr, responder.challenge_type)
    answered = []
    for name, challb in pending:
        key_authorization = challb.chall.key_authorization(session.key)
        token = challb.chall.encode("token")
        # Written before the record exists: a crash between the two leaves a removal that finds nothing.
        state["placed"].append({"name": name, "token": token, "key_authorization": key_authorization})
        _write_json(order_path, state)
        responder.place(name, token, key_authorization)
        answered.append(challb)
    responder.ready()
    for challb in answered:
        if challb.status == messages.STATUS_PENDING:
            try:
                session.client.answer_challenge(challb, challb.response(session.key))
            except messages.Error as exc:
                raise translate(exc, "challenge") from None
    try:
        return session.client.poll_authorizations(orderr, deadline)
    except acme_errors.ValidationError as exc:
        raise _validation_error(exc.failed_authzrs, responder.challenge_type) from None
    except acme_errors.TimeoutError:
        raise AcmeValidationFailed(f"the CA did not finish validating within {session.settings.timeout:.0f} s; run "
                                   "again (the same order is picked up)") from None


def _finalize(session: _Session, orderr: messages.OrderResource, deadline: dt.datetime,
              csr: bytes) -> messages.OrderResource:
    try:
        if orderr.body.status == messages.STATUS_VALID and orderr.body.certificate:
            text = session.post_as_get(orderr.body.certificate).text
            return orderr.update(fullchain_pem=text)
        if orderr.body.status == messages.STATUS_PROCESSING:
            return session.client.poll_finalization(orderr, deadline)
        return session.client.finalize_order(orderr, deadline)
    except messages.Error as exc:
        raise translate(exc, "finalization", csr) from None
    except acme_errors.IssuanceError as exc:
        raise translate(exc.error, "finalization", csr) from None
    except acme_errors.TimeoutError:
        raise AcmeError(f"the CA did not issue within {session.settings.timeout:.0f} s; run again (the same order "
                        "is picked up)") from None


def _clean_leftovers(state: dict[str, Any], responder: ChallengeResponder, log: Callable[[str], None]) -> None:
    """Responses a killed run left out are removed before anything else (also for another order)."""
    for item in list(state.get("placed") or []):
        try:
            responder.remove(item["name"], item["token"], item["key_authorization"])
        except AcmeError as exc:
            log(f"warning: a challenge response left by an earlier run was not removed: {exc}")


def _remove_placed(state: dict[str, Any], responder: ChallengeResponder, order_path: Path,
                   log: Callable[[str], None]) -> None:
    left = []
    for item in state.get("placed") or []:
        try:
            responder.remove(item["name"], item["token"], item["key_authorization"])
        except AcmeError as exc:
            left.append(item)
            log(f"warning: the challenge response for {item['name']} was not removed: {exc}")
    state["placed"] = left
    _write_json(order_path, state)


def _parse_chain(fullchain_pem: str) -> IssuedCertificate:
    try:
        certs = x509.load_pem_x509_certificates(fullchain_pem.encode())
    except ValueError as exc:
        raise AcmeError(f"the CA's certificate chain is not PEM ({exc})") from None
    return sort_delivery(certs, "the ACME CA's answer")


def signature_hash(csr_pem: str) -> str | None:
    """'sha1', 'sha256', ... of the request's own signature (what a CA that refuses SHA-1 looks at)."""
    return _csr_hash_name(normalize_csr(csr_pem))


__all__ = ["AcmeResult", "AcmeSettings", "ChallengeResponder", "issue", "signature_hash"]
