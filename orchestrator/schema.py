"""The playbook's JSON Schema (`exmig schema`), for editors with a YAML language server.

Generated from the pydantic model in playbook.py (types, enums, ranges, required fields, no unknown keys,
the field descriptions), then given the loader's value rules a schema can state: the patterns of its
validators and the conditions between fields (`if`/`then`). Each addition below names the validator it
mirrors; tests/plan/test_schema.py runs the schema and the loader over every playbook in the repository and
lists, fixture by fixture, the rules only the loader can check (comparing two fields' values, unique names
ignoring case, files that must exist).

Draft-07: the draft the YAML language server (VS Code's YAML extension, and editors built on it) implements
(redhat-developer/yaml-language-server#856). Patterns avoid inline flags and look-behind: editors read them
as ECMAScript, the tests with Python's re.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.playbook import Playbook

DIALECT = "http://json-schema.org/draft-07/schema#"

# check_hostname: labels of a-z, 0-9 and '-' (not at either end), 1-63 characters, at least two labels
# (three after a wildcard), 255 characters at most before the final dots it drops; it lower-cases first.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = rf"^(?=.{{1,255}}\.*$)(?:\*\.)?(?:{_LABEL}\.)+{_LABEL}\.*$"
# has_control: Unicode categories Cc (C0, DEL, C1), Zl and Zp.
_CONTROL = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
TEXT = rf"^[^{_CONTROL}]*[^{_CONTROL}\s][^{_CONTROL}]*$"  # Subject._plain_text: also not blank
NO_CONTROL = rf"^[^{_CONTROL}]*$"
COUNTRY = "^[A-Za-z]{2}$"  # Subject._country (upper-cased by the loader)
ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"  # playbook._ENV_NAME
HOST = r"^[^/ @?#\u0000-\u0020]+$"  # Connection._host
SERVER_NAME = "^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"  # playbook._SERVER_NAME
WINDOWS_DIR = r'^[A-Za-z]:\\(?:[^<>:"/\\|?*\u0000-\u001f]+\\?)*$'  # playbook._WINDOWS_DIR
# kerberos.check_username: user@REALM (kerberos._USER, kerberos._REALM), the user without an '@'.
_REALM_LABEL = "[A-Za-z0-9][A-Za-z0-9-]{0,62}"
PRINCIPAL = rf"""^[^\s@\\/:"']{{1,104}}@{_REALM_LABEL}(?:\.{_REALM_LABEL})*$"""
SPN_SERVICE = "^[A-Za-z][A-Za-z0-9-]{0,31}$"  # Connection._spn_service
SPN_HOSTNAME = "^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$"  # Connection._spn_hostname
ACME_DIRECTORY = r"^https://[^\s/?#]+(/\S*)?$"  # AcmeIssuer._directory
EMAIL = r"""^(mailto:)?[^@\s:,<>"']+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"""  # playbook._EMAIL (mailto: dropped first)
DNS_SERVER = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$"  # playbook._DNS_SERVER
_DNS_LABEL = "[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
TSIG_NAME = rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}\.?$"  # playbook._DNS_NAME


def _any_case(text: str) -> str:
    """`microsoft.exchange` -> `[Mm][Ii]...\\.[Ee]...`: a case-insensitive match without an inline flag."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else ("\\" + c if c in ".-/" else c) for c in text)


def _is(value: Any) -> dict[str, Any]:
    return {"const": value}


def _present(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The key is there and its value matches (a null value counts as absent, as the model reads it)."""
    return {"required": [name], "properties": {name: schema}}


def _string_branch(prop: dict[str, Any]) -> dict[str, Any]:
    """The string alternative of an optional (`X | None`) property, or the property itself."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") == "string":
            return branch
    return prop


def playbook_schema() -> dict[str, Any]:
    schema = copy.deepcopy(Playbook.model_json_schema())
    defs = schema["$defs"]

    props = defs["Subject"]["properties"]
    props["CN"]["pattern"] = HOSTNAME
    _string_branch(props["C"])["pattern"] = COUNTRY
    for name in ("S", "L", "O", "OU"):
        _string_branch(props[name])["pattern"] = TEXT

    props = defs["CertificateSpec"]["properties"]
    props["domains"]["items"]["pattern"] = HOSTNAME
    props["domains"]["uniqueItems"] = True  # CertificateSpec._domains
    props["services"]["uniqueItems"] = True  # CertificateSpec._unique_services
    _string_branch(props["friendly_name"]).update(maxLength=63, pattern=NO_CONTROL)  # CertificateSpec._friendly
    props["private_key_exportable"]["const"] = True  # Playbook._roles: the key must move to the targets
    # UncoveredOk: check_name_in_use takes a host name or a single label (a NetBIOS name); a reason as text.
    accepted = defs["UncoveredOk"]["properties"]
    accepted["name"]["pattern"] = f"^(?:{_LABEL}\\.*|{HOSTNAME[1:-1]})$"
    accepted["reason"]["pattern"] = TEXT

    # Coexistence: legacy_host a host name, not a wildcard (Coexistence._not_wildcard); services unique.
    coexistence = defs["Coexistence"]["properties"]
    coexistence["legacy_host"]["pattern"] = HOSTNAME
    coexistence["legacy_host"]["not"] = {"pattern": "^\\*"}
    coexistence["services"]["uniqueItems"] = True

    # SecretRef._one_source: exactly one of env, prompt, generate; lab_default only with env.
    secret = defs["SecretRef"]
    _string_branch(secret["properties"]["env"])["pattern"] = ENV_NAME
    secret["oneOf"] = [_present("env", {"type": "string"}), _present("prompt", _is(True)),
                       _present("generate", _is(True))]
    secret["if"] = _present("lab_default", _is(True))
    secret["then"] = _present("env", {"type": "string"})
    # Credentials._not_generated. allOf, not a sibling of $ref: draft-07 ignores a $ref's siblings.
    password = next(b for b in defs["Credentials"]["properties"]["password"]["anyOf"] if "$ref" in b)
    password["allOf"] = [{"$ref": password.pop("$ref")}, {"not": _present("generate", _is(True))}]

    connection = defs["Connection"]
    _string_branch(connection["properties"]["host"])["pattern"] = HOST
    _string_branch(connection["properties"]["spn_service"])["pattern"] = SPN_SERVICE
    _string_branch(connection["properties"]["spn_hostname"])["pattern"] = SPN_HOSTNAME
    # Server._transport_fits_version: a console file is WinRS's.
    connection["if"] = _present("console_file", {"type": "string"})
    connection["then"] = _present("transport", _is("winrs"))

    server = defs["Server"]
    server["properties"]["name"]["pattern"] = SERVER_NAME
    server["properties"]["workdir"]["pattern"] = WINDOWS_DIR
    names = next(b for b in server["properties"]["client_names"]["anyOf"] if b.get("type") == "array")
    names["items"]["pattern"] = HOSTNAME
    # Server._transport_fits_version: WinRS only to 2007; 2007 has one endpoint and no Microsoft.Exchange
    # configuration; the snap-in is 2007's.
    absent = {"type": "null"}
    server["allOf"] = [
        {"if": _present("connection", _present("transport", _is("winrs"))), "then": _present("version", _is(2007))},
        {"if": _present("version", _is(2007)),
         "then": {"properties": {"connection": {"properties": {
             "system_port": absent, "system_path": absent, "system_scheme": absent,
             "configuration": {"not": {"type": "string", "pattern": f"^{_any_case('microsoft.exchange')}$"}},
             # Connection._path adds the leading slash the loader then compares without trailing ones.
             "path": {"not": {"type": "string", "pattern": f"^/?{_any_case('powershell')}/*$"}},
         }}}},
         "else": {"properties": {"connection": {"properties": {"snapin": absent}}}}},
        # Server._kerberos_credentials: with Kerberos (written, or 2010's default) the user is a principal and
        # the password may be left out (the admin's ticket); with anything else a password is needed.
        {"if": {"anyOf": [_present("connection", _present("auth", _is("kerberos"))),
                          {"required": ["version"],
                           "properties": {"version": _is(2010), "connection": {"properties": {"auth": absent}}}}]},
         "then": {"properties": {"credentials": {"properties": {"username": {"pattern": PRINCIPAL}}}}},
         "else": {"properties": {"credentials": _present("password", {"not": {"type": "null"}})}}},
        # ... and an SPN only for Kerberos or Negotiate (written, or the version's default).
        {"if": _present("connection", {"anyOf": [_present("spn_service", {"type": "string"}),
                                                 _present("spn_hostname", {"type": "string"})]}),
         "then": {"properties": {"connection": {"properties": {"auth": {"enum": ["kerberos", "negotiate", None]}}}}}},
        # Server._transport_fits_version: Basic only over https on both endpoints (the system one follows
        # `scheme` unless `system_scheme` says otherwise); it has no message encryption.
        {"if": _present("connection", _present("auth", _is("basic"))),
         "then": {"properties": {"connection": {"required": ["scheme"], "properties": {
             "scheme": _is("https"), "system_scheme": {"enum": ["https", None]}}}}}},
    ]

    # FilesIssuer._something: the CA's certificate or its bundle.
    defs["FilesIssuer"]["anyOf"] = [_present("certificate", {"type": "string"}),
                                    _present("bundle", {"type": "string"})]

    # AcmeIssuer and its parts: the patterns of their validators, and dns/client_names by challenge.
    props = defs["AcmeIssuer"]["properties"]
    props["directory"]["pattern"] = ACME_DIRECTORY  # AcmeIssuer._directory
    _string_branch(props["contact"])["pattern"] = EMAIL  # AcmeIssuer._contact
    defs["AcmeIssuer"]["allOf"] = [
        # AcmeIssuer._challenge_settings
        {"if": _present("challenge", _is("dns-01")),
         "then": {"required": ["dns"], "properties": {"dns": {"type": "object"}, "client_names": {"type": "null"}}},
         "else": {"properties": {"dns": {"type": "null"}}}},
    ]
    props = defs["AcmeDns"]["properties"]
    props["server"]["pattern"] = DNS_SERVER  # AcmeDns._server (the port's range is the loader's)
    props["zone"]["pattern"] = HOSTNAME  # AcmeDns._zone
    props["tsig_name"]["pattern"] = TSIG_NAME  # AcmeDns._tsig_name
    # AcmeEab._hmac_source, AcmeDns._secret_source: from the environment or a prompt, never generated or inline.
    not_generated = {"not": {"anyOf": [_present("generate", _is(True)), _present("lab_default", _is(True))]}}
    for model, name in (("AcmeEab", "hmac"), ("AcmeDns", "tsig_secret")):
        prop = defs[model]["properties"][name]
        # Draft-07 ignores a $ref's siblings, so the reference and the rule go side by side in allOf.
        defs[model]["properties"][name] = {"description": prop["description"],
                                           "allOf": [{"$ref": prop["$ref"]}, not_generated]}

    root = schema["properties"]
    # Playbook._roles: a source server (at least one: "at most one" needs draft 2019-09's maxContains).
    root["servers"]["contains"] = _present("role", _is("source"))
    # Playbook._roles: `lab_default` only in lab playbooks.
    schema["if"] = _present("issuer", _present("type", _is("lab")))
    schema["else"] = {"properties": {"servers": {"items": {"properties": {"credentials": {"properties": {
        "password": {"not": {"type": "object", **_present("lab_default", _is(True))}}}}}}}}}
    # playbook.acme_problem: a wildcard name is proven over dns-01 only.
    schema["allOf"] = [{"if": _present("issuer", _present("challenge", _is("http-01"))),
                        "then": {"properties": {"certificate": {"properties": {"domains": {
                            "items": {"not": {"pattern": r"^\*\."}}}}}}}}]
    # The model's default, as an admin writes it (not every field of SecretRef).
    root["pfx_password"]["default"] = {"generate": True}

    return {
        "$schema": DIALECT,
        "title": "exmig playbook",
        "description": "An exmig migration playbook: the certificate to request on the Exchange 2010 source, the "
                       "servers, the issuer. Check one with `exmig validate PLAYBOOK`.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
