"""`exmig schema` and the loader agree: every playbook in the repository, good and bad, gets the same verdict.

The bad ones (tests/fixtures/playbooks/invalid/) each break one rule and say, in their `# expect:` line, what
the loader answers. The schema rejects them too, except the rules in LOADER_ONLY, which a draft-07 JSON
Schema cannot state; those fixtures must pass the schema, so a schema that starts to reject them (or a
loader that stops) shows up here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import playbook
from orchestrator import schema as schema_module
from orchestrator.errors import PlaybookError
from orchestrator.kerberos import check_username
from orchestrator.playbook import _WINDOWS_DIR, Service, check_hostname, has_control, load_playbook
from orchestrator.schema import playbook_schema
from orchestrator.yamlsource import dotted, load_yaml
from tests.conftest import ROOT

GOOD = sorted([*(ROOT / "playbooks").glob("*.yml"), *(ROOT / "tests" / "fixtures" / "playbooks").glob("*.yml")])
BAD = sorted((ROOT / "tests" / "fixtures" / "playbooks" / "invalid").glob("*.yml"))

LOADER_ONLY = {
    "two-sources.yml": "at most one source: counting matching items needs maxContains (draft 2019-09); draft-07's "
                       "`contains` only says at least one",
    "cn-not-in-domains.yml": "compares one field's value with another's (subject.CN among domains)",
    "client-name-not-in-domains.yml": "compares one field's values with another's (client_names within domains)",
    "server-names-differ-in-case.yml": "unique ignoring case: uniqueItems compares whole items, with case",
    "read-timeout-too-short.yml": "compares two fields' values (read_timeout > operation_timeout)",
    "files-issuer-file-missing.yml": "the named file must exist on disk: a schema sees only the text",
    "acme-zone-mismatch.yml": "compares one field's value with others' (every domain inside issuer.dns.zone)",
    "acme-client-names-unknown-server.yml": "compares one field's values with others' (client_names' servers "
                                            "among servers[].name)",
    "coexistence-legacy-host-not-in-domains.yml": "compares one field's value with another's (legacy_host covered by "
                                                  "domains, wildcards included)",
    "uncovered-ok-covered.yml": "compares one field's values with another's (an accepted name covered by domains)",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = playbook_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _data(path: Path) -> Any:
    data, _source = load_yaml(path)  # the loader's YAML reading (1.2, line map), so both judge the same data
    return data


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_fixtures_cover_every_loader_only_rule() -> None:
    assert len(BAD) >= 40
    every = {*(ROOT / "playbooks").rglob("*.y*ml"), *(ROOT / "tests" / "fixtures" / "playbooks").rglob("*.y*ml")}
    assert every == {*GOOD, *BAD}  # no playbook left out of the comparison
    assert set(LOADER_ONLY) <= {p.name for p in BAD}


@pytest.mark.parametrize("path", GOOD, ids=_relative)
def test_a_good_playbook_passes_both(validator: jsonschema.Draft7Validator, path: Path) -> None:
    load_playbook(path)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_data(path))]
    assert errors == []


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_a_bad_playbook_fails_the_loader_and_the_schema(validator: jsonschema.Draft7Validator, path: Path) -> None:
    expect = next(line for line in path.read_text().splitlines() if line.startswith("# expect: "))
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)
    assert expect.removeprefix("# expect: ") in str(caught.value)
    errors = list(validator.iter_errors(_data(path)))
    if path.name in LOADER_ONLY:
        assert errors == [], f"the schema now checks what LOADER_ONLY says it cannot: {[e.message for e in errors]}"
    else:
        assert errors, f"{path.name}: the loader refuses it ({caught.value}) but the schema accepts it"
        # ... for the same field (or one inside it, or the part that holds it: a rule between fields).
        field = caught.value.field
        where = [dotted(e.absolute_path) for e in errors]
        assert any(_related(field, w) for w in where), (field, where)


def _related(a: str, b: str) -> bool:
    """One dotted location is the other or inside it: `servers[1]` and `servers[1].connection.port`."""
    inner, outer = (a, b) if len(a) >= len(b) else (b, a)
    return outer == "" or inner == outer or inner.startswith((outer + ".", outer + "["))


def test_every_field_has_a_description() -> None:
    schema = playbook_schema()
    models = {"Playbook": schema, **{name: d for name, d in schema["$defs"].items() if "properties" in d}}
    fields = [(name, field) for name in models for field in getattr(playbook, name).model_fields]
    assert len(fields) >= 65
    assert [f"{name}.{field}" for name, field in fields
            if not models[name]["properties"][field].get("description")] == []


def _enum(schema: dict[str, Any], prop: dict[str, Any]) -> list[Any]:
    for branch in [prop, *prop.get("anyOf", [])]:
        if "enum" in branch:
            return list(branch["enum"])
        if "$ref" in branch:
            return list(schema["$defs"][branch["$ref"].rsplit("/", 1)[1]]["enum"])
        if "items" in branch:
            return _enum(schema, branch["items"])
    raise AssertionError(f"no enum in {prop}")


def test_versions_auth_services_and_transports_are_enums() -> None:
    schema = playbook_schema()
    server = schema["$defs"]["Server"]["properties"]
    connection = schema["$defs"]["Connection"]["properties"]
    assert _enum(schema, server["version"]) == [2007, 2010]
    assert _enum(schema, connection["auth"]) == ["basic", "ntlm", "negotiate", "kerberos", "credssp"]
    assert _enum(schema, connection["transport"]) == ["psrp", "winrs"]
    assert _enum(schema, schema["$defs"]["CertificateSpec"]["properties"]["services"]) == [s.value for s in Service]
    assert _enum(schema, server["services"]) == [s.value for s in Service]


def test_the_command_prints_the_schema_and_the_readme_shows_the_modeline(exmig: Callable) -> None:
    result = exmig("schema")
    assert result.code == 0, result.err
    assert json.loads(result.out) == playbook_schema()
    assert "# yaml-language-server: $schema=" in (ROOT / "README.md").read_text()


# The patterns against the validators they mirror, on generated text. Whitespace is left out: the model strips
# it from both ends before its validators run, the schema sees the value as written (YAML plain scalars have
# none at the ends).
_LABELS = st.lists(st.just("*") | st.text(alphabet="ab-9", max_size=66) | st.sampled_from(["a" * 63, "a" * 64]),
                   max_size=6)
_NAMEISH = st.text(alphabet="aZ09-.*_@", max_size=70) | st.builds(".".join, _LABELS) | st.builds(
    lambda labels: ".".join(labels) + ".", _LABELS)


@settings(max_examples=600, deadline=None)
@given(name=_NAMEISH)
def test_the_hostname_pattern_is_check_hostname(name: str) -> None:
    try:
        check_hostname(name)
        loader = True
    except ValueError:
        loader = False
    assert (re.search(schema_module.HOSTNAME, name) is not None) == loader


def test_the_hostname_pattern_on_the_edges() -> None:
    label = "a" * 63
    for name in (".".join([label] * 4), ".".join([label] * 4)[:255], ".".join([label] * 4)[:255] + "..",
                 "*." + ".".join([label] * 3) + ".b", "x." + label + "a", "*.*.example.com", "*.com", "a.*.example.com",
                 "-a.example.com", "a-.example.com", "example.com.", "example.com..", "Mail.Example.COM", "a..com"):
        try:
            check_hostname(name)
            loader = True
        except ValueError:
            loader = False
        assert (re.search(schema_module.HOSTNAME, name) is not None) == loader, name


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("aZ .\x00\x07\x1f\x7f\x85\x9f\u2028\u2029\u00e9"), max_size=12))
def test_the_text_pattern_is_the_subject_rule(text: str) -> None:
    if text != text.strip():
        return
    loader = bool(text) and not has_control(text)
    assert (re.search(schema_module.TEXT, text) is not None) == loader


@settings(max_examples=400, deadline=None)
@given(path=st.text(alphabet=st.sampled_from('Cc:\\/ab<>"|?*\x01 .'), max_size=14))
def test_the_workdir_pattern_is_the_loader_s(path: str) -> None:
    assert (re.search(schema_module.WINDOWS_DIR, path) is not None) == (_WINDOWS_DIR.fullmatch(path) is not None)


@settings(max_examples=500, deadline=None)
@given(user=st.text(alphabet=st.sampled_from("aZ9@.-_\\/:'\" é"), max_size=16))
def test_the_principal_pattern_is_check_username(user: str) -> None:
    assert (re.search(schema_module.PRINCIPAL, user) is not None) == (check_username(user) is None)
