"""``levere``: the command-line client, plus the server-side ``init``, ``serve`` and ``worker``.

Every command turns errors into one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from levere.cli import accounts, admin, applications, projects, server, sync, transfer
from levere.cli.output import State, err_console
from levere.domain.errors import LevereError

app = typer.Typer(
    name="levere",
    help="Deliver sequencing data from a core facility into research projects' storage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    State.json_output = json_output


server.register(app)
accounts.register(app)
applications.register(app)
projects.register(app)
admin.register(app)
transfer.register(app)
sync.register(app)


def run() -> None:
    try:
        app()
    except LevereError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    run()
