"""Exceptions that the CLI turns into one line on stderr and a documented exit code.

Exit codes (see README): 0 audit done, nothing at or above the failure threshold; 1 audit done
with findings at or above the threshold; 2 unusable input, usage, configuration or I/O error;
3 audit done but inconclusive (nothing analysed, or weights skipped for a limit).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INCONCLUSIVE = 3


def exit_code(verdict: str) -> int:
    """The exit code of a finished audit or comparison: fail 1, inconclusive 3, else 0."""
    return {"fail": EXIT_FINDINGS, "inconclusive": EXIT_INCONCLUSIVE}.get(verdict, EXIT_OK)


class WwauditError(Exception):
    """An error the user can act on; its message is printed as one line, never a traceback."""

    exit_code: int = EXIT_ERROR


class InputError(WwauditError):
    """The model file (or a file it refers to) is missing, unreadable or malformed."""


class UsageError(WwauditError):
    """The command line or a policy file asks for something impossible."""


class OutputError(WwauditError):
    """An output file cannot be written."""


class ResourceLimitError(WwauditError):
    """The audit would exceed a configured time or memory limit."""
