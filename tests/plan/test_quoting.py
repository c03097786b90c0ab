"""Any value renders to a PowerShell literal that parses back to exactly that value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.commands import Command, Param, Text, TextList, arg
from orchestrator.lab.pslang import ParseError, parse_command
from orchestrator.plan import build_plan
from orchestrator.playbook import parse_playbook
from orchestrator.render.powershell import SINGLE_QUOTES, quote, render_command
from orchestrator.yamlsource import SourceMap

HOSTILE = ["'", "''", "\u2018", "\u2019", "\u201a", "\u201b", "$(calc)", "`n", "\"", ";", "|", "&", "\n",
           "\r\n", "${env:X}", "@(1)", "#", "<#", "-Force", " ", "\t", "\u00a0", "\x00", "é", "\U0001f512"]

hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=5)), max_size=8).map("".join)


@settings(max_examples=400)
@given(value=st.one_of(st.text(), hostile_text))
def test_any_string_round_trips(value: str) -> None:
    line = render_command(Command("Set-Content", (Param("Path", Text(value)),)))
    parsed = parse_command(line)
    assert parsed.name == "Set-Content"
    assert parsed.arguments == [("Path", value)]


@settings(max_examples=200)
@given(values=st.lists(st.one_of(st.text(min_size=0), hostile_text), min_size=2, max_size=5))
def test_string_lists_round_trip(values: list[str]) -> None:
    parsed = parse_command(render_command(Command("Enable-ExchangeCertificate",
                                                  (Param("Services", TextList(tuple(values))),))))
    assert parsed.arguments == [("Services", values)]


@given(value=st.one_of(st.text(min_size=1), hostile_text.filter(bool)))
def test_native_arguments_round_trip(value: str) -> None:
    parsed = parse_command(render_command(Command("certutil.exe", (arg("-addstore"), arg("CA"), arg(value)),
                                                  native=True)))
    assert parsed.arguments == [(None, "-addstore"), (None, "CA"), (None, value)]


@pytest.mark.parametrize("quote_char", sorted(SINGLE_QUOTES))
def test_every_single_quote_character_is_doubled(quote_char: str) -> None:
    assert quote(f"a{quote_char}b") == f"'a{quote_char}{quote_char}b'"


def test_an_unescaped_unicode_quote_would_end_the_string() -> None:
    # The check behind the test above: PowerShell ends a string at U+2019 too.
    with pytest.raises(ParseError):
        parse_command("Set-Content -Path 'a\u2019; Remove-Item C:\\ -Recurse; \u2019'")


def _playbook(friendly: str, org: str, workdir_leaf: str) -> dict:
    return {
        "certificate": {"subject": {"CN": "mail.example.com", "O": org},
                        "domains": ["mail.example.com"], "friendly_name": friendly},
        "issuer": {"type": "manual"},
        "servers": [
            {"name": "EX1", "version": 2010, "role": "source", "connection": {"host": "ex1.example.com"},
             "credentials": {"username": "u@EXAMPLE.COM", "password": {"env": "P"}}},
            {"name": "EX2", "version": 2007, "role": "target", "connection": {"host": "ex2.example.com"},
             "credentials": {"username": "u", "password": {"env": "P"}}, "workdir": "C:\\" + workdir_leaf},
        ],
    }


# What the playbook accepts in text: no control characters or line separators (test_playbook_errors).
printable = st.text(st.characters(min_codepoint=32, blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1,
                    max_size=30)
hostile_printable = st.lists(st.sampled_from([h for h in HOSTILE if h.isprintable() and h]), min_size=1,
                             max_size=6).map("".join)


@settings(max_examples=150, deadline=None)
@given(friendly=st.one_of(printable, hostile_printable).filter(lambda s: len(s.strip()) > 0 and len(s) < 64),
       org=st.one_of(printable, hostile_printable).filter(lambda s: s.strip() != ""),
       leaf=st.sampled_from(["Certs", "My Certs", "Certs$x", "a'b", "x\u2019y", "`$(x)"]))
def test_hostile_playbook_values_render_inert(friendly: str, org: str, leaf: str) -> None:
    """Every command of a plan built from hostile values parses back to the plan's own values."""
    playbook = parse_playbook(_playbook(friendly, org, leaf), SourceMap("hostile.yml"))
    for step in build_plan(playbook).steps:
        for command in step.commands:
            parsed = parse_command(render_command(command))
            assert parsed.name == command.name
            for (name, value), param in zip(parsed.arguments, command.params, strict=True):
                assert name == param.name
                if isinstance(param.value, Text):
                    assert value == param.value.value
                elif isinstance(param.value, TextList):
                    expected = list(param.value.values)
                    assert (value if isinstance(value, list) else [value]) == expected


@pytest.mark.parametrize("value", ["-Force\n", "CA\n", "-addstore\r", "x\n; calc"])
def test_a_trailing_newline_never_makes_a_bare_native_argument(value: str) -> None:
    line = render_command(Command("certutil.exe", (arg(value),), native=True))
    assert "\n" not in line.replace(value, "") and line.endswith(quote(value))
    assert parse_command(line).arguments == [(None, value)]
