"""Errors that reach the user as one line, and the exit codes exmig documents."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a step failed on a server
    USAGE = 2  # bad command line or playbook
    WAITING_FOR_CA = 3  # the CSR is written; run again with the CA's files
    VERIFY_FAILED = 4  # the migration ran but verification found a problem
    INTERRUPTED = 130


class ExmigError(Exception):
    """An error the user can act on; its text is one line naming what and where."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PlaybookError(ExmigError):
    """The playbook (or a file it names) is not usable: `file:line: field: problem`."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: str, line: int | None, field: str, problem: str) -> None:
        where = f"{file}:{line}" if line else file
        prefix = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(prefix + problem)
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem


class UsageError(ExmigError):
    exit_code = ExitCode.USAGE
