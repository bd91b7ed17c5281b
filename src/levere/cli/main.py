"""``levere``: the command-line client, plus the server-side ``init``, ``serve`` and ``worker``.

Every command turns errors into one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from levere.cli import accounts, admin, applications, projects, server, sync, transfer
from levere.cli.output import State, err_console
from levere.cli.process import tune_gc
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
    tune_gc()
    try:
        app()
    except LevereError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # a file or the network, outside any request
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except Exception as exc:
        # a bug: still one line, unless asked for the whole story
        if os.environ.get("LEVERE_DEBUG"):
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (LEVERE_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        sys.exit(70)


if __name__ == "__main__":
    run()
