"""``levere``: the command-line client, plus the server-side ``init``, ``serve`` and ``worker``.

Every command turns errors into one line on stderr and a non-zero exit code, never a traceback
(one JSON object instead with ``--json``: see :mod:`levere.cli.errors`).

``--json`` is one shared option added to every command and group when the command tree is built
(:func:`command`), so it may be given anywhere: ``levere --json projects list`` and
``levere projects list --json`` are the same.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from levere.cli import (
    accounts,
    admin,
    applications,
    federation,
    keys,
    projects,
    secure,
    server,
    sync,
    transfer,
)
from levere.cli.errors import USAGE_EXIT, json_requested, report, report_levere
from levere.cli.output import State, console
from levere.cli.process import tune_gc
from levere.domain.errors import LevereError

app = typer.Typer(
    name="levere",
    help="Deliver sequencing data from a core facility into research projects' storage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("levere")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown"
        console.print(f"levere {number}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print levere's version and exit."),
    ] = False,
) -> None:
    """Deliver sequencing data from a core facility into research projects' storage."""


server.register(app)
accounts.register(app)
federation.register(app, accounts.account)
applications.register(app)
projects.register(app)
admin.register(app)
transfer.register(app)
sync.register(app)
secure.register_commands(app)
keys.register(app)

JSON_HELP = "Print machine-readable JSON (errors too, as one JSON object on stderr)."


def _json_flag(value: bool) -> None:
    if value:  # given on a group or on its command: either turns JSON on
        State.json_output = True


JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP, is_eager=True, callback=_json_flag)]


def _with_json(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a command that also takes ``--json`` (read by the option's callback, not by ``fn``)."""
    signature = inspect.signature(fn, eval_str=True)
    if "json_output" in signature.parameters:
        return fn

    @functools.wraps(fn)
    def command(*args: Any, json_output: bool = False, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    flag = inspect.Parameter(
        "json_output", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonFlag
    )
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), flag]
    )
    command.__annotations__ = {name: p.annotation for name, p in signature.parameters.items()} | {
        "json_output": JsonFlag
    }
    return command


def _no_options() -> None:
    pass  # a group's own callback, there to carry --json (no docstring: it would become the group's help)


def add_json_everywhere(group: typer.Typer) -> None:
    """Give every command and group under ``group`` the one shared ``--json`` option."""
    for info in group.registered_commands:
        if info.callback is not None:
            info.callback = _with_json(info.callback)
    if group.registered_callback is not None and group.registered_callback.callback is not None:
        group.registered_callback.callback = _with_json(group.registered_callback.callback)
    else:
        group.callback()(_with_json(_no_options))
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            add_json_everywhere(sub.typer_instance)


add_json_everywhere(app)


def _click_error(name: str) -> Any:
    """One of click's exception classes, as the click Typer uses raises them (newer Typers carry a
    copy of click of their own); found among the bases of Typer's public ``BadParameter``."""
    return next(kind for kind in typer.BadParameter.__mro__ if kind.__name__ == name)


def _usage(exc: Any, as_json: bool) -> int:
    where = exc.ctx.command_path if exc.ctx is not None else "levere"
    message = exc.format_message().strip().rstrip(".")
    return report("usage", f"{message} (see '{where} --help')", USAGE_EXIT, as_json)


def invoke(args: Sequence[str] | None = None) -> int:
    """Run ``levere`` with ``args`` (default: the process's) and return the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    State.json_output = False
    try:
        command = typer.main.get_command(app)
        outcome: Any = command.main(args=argv, prog_name="levere", standalone_mode=False)
    except _click_error("UsageError") as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            exc.show()
            return USAGE_EXIT
        return _usage(exc, State.json_output or json_requested(argv))
    except _click_error("ClickException") as exc:  # e.g. a file option that cannot be opened
        return report(
            "usage",
            exc.format_message(),
            exc.exit_code,
            State.json_output or json_requested(argv),
        )
    except typer.Abort:
        return report("interrupted", "stopped before it finished", 1, State.json_output)
    except LevereError as exc:
        return report_levere(exc, State.json_output)
    except OSError as exc:  # a file or the network, outside any request
        return report("os_error", str(exc), 1, State.json_output)
    except Exception as exc:
        # a bug: still one line, unless asked for the whole story
        if os.environ.get("LEVERE_DEBUG"):
            raise
        return report(
            "internal_error",
            f"{type(exc).__name__}: {exc} (LEVERE_DEBUG=1 shows the traceback)",
            70,
            State.json_output,
            label="internal error",
        )
    return outcome if isinstance(outcome, int) else 0


def run() -> None:
    tune_gc()
    sys.exit(invoke())


if __name__ == "__main__":
    run()
