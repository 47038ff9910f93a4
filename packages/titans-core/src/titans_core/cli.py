"""``titans-plugins``: list and inspect the registered components; and the user-error handling of Titans CLIs.

Commands::

    titans-plugins list [--json]          # every component: kind, name, distribution, version, config class
    titans-plugins show KIND NAME [--json]  # a component's options (type, default, constraints, description)
    titans-plugins schema KIND            # JSON schema of a `{name: ..., ...}` section of KIND
    titans-plugins new NAME [--dir DIR]   # a plugin package from the template, with its tests

``list`` exits with status 1 when a plugin failed to load. User errors (:class:`TitansUserError`) print
``error: <message>`` on stderr and exit with status 2, without a traceback: wrap a command with
:func:`run_user_command` to get the same behaviour in another CLI.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.table import Table
from rich.text import Text

from titans_core.errors import PluginLoadWarning, TitansUserError, UnknownComponentError
from titans_core.registry import ENV_VAR, Component, get_registry
from titans_core.spec import ComponentRefMarker, kind_json_schema
from titans_core.spec_errors import show as show_value

USER_ERROR_EXIT = 2
LOAD_ERROR_EXIT = 1
F = TypeVar("F", bound=Callable[..., Any])


def print_user_error(exc: BaseException, *, prefix: str = "error", file: TextIO | None = None) -> None:
    """Print ``error: <message>`` (continuation lines indented under the message) to stderr."""
    stream = file if file is not None else sys.stderr
    lines = str(exc).splitlines() or [type(exc).__name__]
    head = f"{prefix}: "
    stream.write(head + lines[0] + "\n")
    for line in lines[1:]:
        stream.write(" " * len(head) + line + "\n")
    stream.flush()


def _show_warning(
    message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print_user_error(message if isinstance(message, Warning) else Warning(message), prefix="warning", file=file)


def run_user_command(fn: F) -> F:
    """Decorator for CLI commands: a :class:`TitansUserError` prints ``error: <message>`` and exits with
    status 2 (no traceback); a :class:`PluginLoadWarning` prints ``warning: <message>``. Other exceptions are
    bugs and propagate with their traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            original = warnings.showwarning

            def showwarning(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
                if issubclass(category, PluginLoadWarning):
                    _show_warning(message, category, *rest, **kw)
                else:
                    original(message, category, *rest, **kw)

            warnings.showwarning = showwarning
            try:
                return fn(*args, **kwargs)
            except TitansUserError as exc:
                print_user_error(exc)
                raise SystemExit(USER_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]


def make_app(name: str, help: str) -> typer.Typer:
    """A Titans command-line app: no arguments prints the help; no shell-completion commands; tracebacks of bugs
    without local variables (user errors never show one, see :func:`run_user_command`)."""
    return typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False
    )


def make_console(*, piped_width: int = 160, stderr: bool = False) -> Console:
    """A rich console without syntax highlighting; when the output is piped (not a terminal) it is at least
    ``piped_width`` columns wide, so table rows stay unwrapped in logs and files."""
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        console.width = max(console.width, piped_width)
    return console


app = make_app("titans-plugins", "List and inspect the Titans components registered by installed plugins.")


def _console() -> Console:
    return make_console(piped_width=200)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _component_json(component: Component) -> dict[str, str]:
    return {
        "kind": component.kind,
        "name": component.name,
        "dist": component.dist,
        "version": component.version,
        "config": _qualname(component.config_cls),
        "factory": _qualname(component.factory),
        "description": component.description,
    }


@app.command("list")
@run_user_command
def list_components(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every registered component and every plugin that failed to load (then exit with status 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # reported below instead
        registry = get_registry()
    components = registry.components()
    if as_json:
        payload = {
            "components": [_component_json(c) for c in components],
            "load_errors": [
                {"entry_point": e.entry_point, "dist": e.dist, "cause": e.cause} for e in registry.load_errors
            ],
            "warnings": list(registry.warnings),
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    elif components:
        table = Table("kind", "name", "distribution", "version", "config class", title="Titans components")
        for c in components:
            table.add_row(*(Text(s) for s in (c.kind, c.name, c.dist, c.version, _qualname(c.config_cls))))
        _console().print(table)
    else:
        note = f" ({ENV_VAR}={','.join(sorted(registry.allow))!r})" if registry.allow is not None else ""
        sys.stdout.write(f"no components registered{note}\n")
    if not as_json:
        for message in registry.warnings:
            print_user_error(Warning(message), prefix="warning")
        for error in registry.load_errors:
            print_user_error(Exception(str(error)))
    if registry.load_errors:
        raise SystemExit(LOAD_ERROR_EXIT)


def _type_text(field: Any) -> str:
    markers = [m for m in field.metadata if isinstance(m, ComponentRefMarker)]
    if markers:
        return f"{markers[0].kind} component"
    annotation = field.annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_CONSTRAINTS = {
    "ge": "≥",
    "gt": ">",
    "le": "≤",
    "lt": "<",
    "multiple_of": "multiple of",
    "min_length": "min length",
    "max_length": "max length",
}


def _constraints_text(field: Any) -> str:
    parts = []
    for item in field.metadata:
        if isinstance(item, ComponentRefMarker):
            continue
        found = [f"{label} {getattr(item, attr)}" for attr, label in _CONSTRAINTS.items() if hasattr(item, attr)]
        parts.extend(found or [repr(item)])
    return ", ".join(parts)


def _default_text(field: Any) -> str:
    if field.default is not PydanticUndefined:
        return show_value(field.default.model_dump() if hasattr(field.default, "model_dump") else field.default)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "default" in extra:
        return show_value(extra["default"])
    return "(computed)" if field.default_factory is not None else "required"


@app.command("show")
@run_user_command
def show_component(
    kind: Annotated[str, typer.Argument(help="Component kind, e.g. memory_model.")],
    name: Annotated[str, typer.Argument(help="Registered name, e.g. mlp.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the config's JSON schema.")] = False,
) -> None:
    """Show a component: where it comes from and its options (type, default, constraints, description)."""
    component = get_registry().get(kind, name)
    config_cls = component.tagged_config_cls
    if as_json:
        sys.stdout.write(json.dumps(config_cls.model_json_schema(), indent=2) + "\n")
        return
    console = _console()
    console.print(Text(f"{kind} {name!r} from {component.source}"))
    console.print(Text(f"config class: {_qualname(component.config_cls)}"))
    console.print(Text(f"factory: {_qualname(component.factory)}"))
    doc = component.description or (component.config_cls.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        console.print(Text(doc))
    table = Table("option", "type", "default", "constraints", "description")
    for field_name, field in config_cls.model_fields.items():
        if field_name == "name":
            continue
        cells = (
            field_name,
            _type_text(field),
            _default_text(field),
            _constraints_text(field),
            field.description or "",
        )
        table.add_row(*(Text(s) for s in cells))
    if table.row_count:
        console.print(table)
    else:
        console.print(Text("(no options)"))


@app.command("schema")
@run_user_command
def schema(kind: Annotated[str, typer.Argument(help="Component kind, e.g. memory_model.")]) -> None:
    """Print the JSON schema of a `{name: ..., ...options}` section of KIND."""
    registry = get_registry()
    if not registry.is_known_kind(kind):
        raise UnknownComponentError(registry.unknown_error_text(kind, "?"))
    sys.stdout.write(json.dumps(kind_json_schema(kind), indent=2) + "\n")


@app.command("new")
@run_user_command
def new(
    name: Annotated[str, typer.Argument(help="Distribution name of the plugin, e.g. my-memory.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write it (must not exist); default ./NAME.")
    ] = None,
) -> None:
    """Write a plugin package (one component of each kind and their tests) from the template."""
    from titans_core.plugin_new import new_plugin

    target = directory if directory is not None else Path(name)
    files = new_plugin(name, target)
    sys.stdout.write(f"wrote {len(files)} files to {target}\n")
    sys.stdout.write(f"next: uv add --editable {target}  (then: titans-plugins list; pytest {target})\n")


def main() -> None:
    """Console-script entry point of ``titans-plugins``."""
    app()


if __name__ == "__main__":
    main()
