"""Typed exceptions raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class RtoptError(Exception):
    """Base class of every error rtopt raises on purpose."""


class InstanceError(RtoptError):
    """An instance file (or dict) is invalid.

    Attributes
    ----------
    source : str
        File path or ``"<dict>"``.
    problems : list of (str, str)
        ``(field_path, message)`` pairs; ``field_path`` is ``""`` for whole-file problems.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: ``FILE: field.path: message``."""
        return [f"{self.source}: {p}: {m}" if p else f"{self.source}: {m}" for p, m in self.problems]


class SolverUnavailable(RtoptError):
    """A solver back-end cannot run on this machine (the message says why)."""


class ProblemDeclined(RtoptError):
    """A back-end cannot handle this problem (the message says why)."""


class InfeasibleProblem(RtoptError):
    """No schedule satisfies the constraints; carries a diagnosis."""

    def __init__(self, message: str, diagnosis: object = None):
        super().__init__(message)
        self.diagnosis = diagnosis


class FolderLocked(RtoptError):
    """Another rtopt process is writing to the folder (the message names it and its pid)."""


class OutputFolderError(RtoptError):
    """The output folder cannot be used as asked (e.g. not empty without --resume/--overwrite)."""


class SolverConfigError(RtoptError):
    """A solver profile asks for something this machine cannot do (e.g. an unknown solver)."""
