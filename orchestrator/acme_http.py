"""http-01 on the Exchange servers' own IIS: each name's token written under the web root of the server(s) that
name points at, over the server's system endpoint, and removed again (orchestrator/acme_issue/http01.py says
where and why a web.config goes beside it).

The issue step's responder: it sends through the executor's sessions (`send`), so every command is an
ordinary typed command, shown in the plan and in the run's events like any other.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.acme_issue.http01 import CHALLENGE_FOLDER, WEB_CONFIG, WEB_CONFIG_PATH, token_path
from orchestrator.commands import Command
from orchestrator.dialects import make_folder, remove_path, write_text
from orchestrator.playbook import AcmeIssuer, Playbook, Server


def place_commands(token: str, key_authorization: str) -> tuple[Command, ...]:
    return (make_folder(CHALLENGE_FOLDER), write_text(WEB_CONFIG_PATH, WEB_CONFIG),
            write_text(token_path(token), key_authorization))


def remove_commands(token: str) -> tuple[Command, ...]:
    return (remove_path(token_path(token)),)


def cleanup_commands() -> tuple[Command, ...]:
    return (remove_path(WEB_CONFIG_PATH),)


class ServerTokens:
    """A ChallengeResponder (orchestrator/acme_issue/client.py) for http-01 through the servers' sessions."""

    challenge_type = "http-01"

    def __init__(self, playbook: Playbook, send: Callable[[Server, Command], None]) -> None:
        issuer = playbook.issuer
        assert isinstance(issuer, AcmeIssuer)
        self._playbook = playbook
        self._issuer = issuer
        self._send = send
        self._touched: list[Server] = []

    def _servers(self, name: str) -> list[Server]:
        return [self._playbook.server(n) for n in self._issuer.servers_for(name, self._playbook.servers,
                                                                             self._playbook.certificate)]

    def place(self, name: str, token: str, key_authorization: str) -> None:
        for server in self._servers(name):
            # The folder and its web.config once per server; then each token.
            commands = place_commands(token, key_authorization)
            for command in commands if server not in self._touched else commands[2:]:
                self._send(server, command)
            if server not in self._touched:
                self._touched.append(server)

    def remove(self, name: str, token: str, key_authorization: str) -> None:
        for server in self._servers(name):
            for command in remove_commands(token):
                self._send(server, command)

    def ready(self) -> None:
        return None  # a file is served the moment it is written

    def cleanup(self) -> None:
        """The web.config exmig put beside the tokens goes too, once the order is done (or failed)."""
        for server in self._touched:
            for command in cleanup_commands():
                self._send(server, command)
        self._touched.clear()
