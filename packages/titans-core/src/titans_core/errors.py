"""User-facing errors of Titans.

Everything a user can cause — a bad spec file, a missing or conflicting plugin, bad data, an incompatible
checkpoint — raises a subclass of :class:`TitansUserError`. Command-line tools catch exactly this base class
and print ``error: <message>`` without a traceback (see ``titans_core.cli.run_user_command``); any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TitansUserError(Exception):
    """Base class of errors caused by user input (spec, data, checkpoint, plugin set-up), not by a bug."""


class PluginLoadError(TitansUserError):
    """A plugin could not be loaded (import failed, its hook raised, or it registered something invalid)."""


class InvalidRegistrationError(PluginLoadError):
    """A ``register(kind, name, config_cls, factory)`` call with invalid arguments."""


class PluginLoadWarning(UserWarning):
    """Warned once per plugin that failed to load; the other plugins still load."""


class DuplicateComponentError(TitansUserError):
    """Two registrations (usually from two plugins) claim the same kind and name."""


class UnknownComponentError(TitansUserError, LookupError):
    """A component kind or name that is not registered."""


class ComponentBuildError(TitansUserError):
    """A component's factory raised (a bug of its plugin, e.g. a config field it does not have): one line naming
    the component, its plugin and the cause. Factories reject option combinations with ``ValueError`` (reported
    as a spec error) instead."""


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a spec: where it is (file, line, dotted path) and what is wrong.

    ``where`` replaces the file location when the value came from somewhere else (e.g. an override
    ``--set trainer.steps=0``).
    """

    path: str
    message: str
    filename: str | None = None
    line: int | None = None
    column: int | None = None
    where: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.where is not None:
            parts.append(self.where)
        elif self.filename is not None:
            location = self.filename
            if self.line is not None:
                location += f":{self.line}"
                if self.column is not None:
                    location += f":{self.column}"
            parts.append(location)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class SpecError(TitansUserError, ValueError):
    """An invalid spec. The message has one line per problem, then optional ``note:`` lines.

    Example::

        spec.yaml:7: model.memory.depth: must be ≥ 1, got 0
        spec.yaml:9: trainer: unknown key 'stpes'; did you mean 'steps'?
    """

    def __init__(self, problems: str | SpecProblem | Sequence[SpecProblem], notes: Sequence[str] = ()) -> None:
        if isinstance(problems, str):
            problems = [SpecProblem(path="", message=problems)]
        elif isinstance(problems, SpecProblem):
            problems = [problems]
        self.problems: list[SpecProblem] = list(problems)
        self.notes: list[str] = list(notes)
        lines = [str(p) for p in self.problems] + [f"note: {n}" for n in self.notes]
        super().__init__("\n".join(lines))
