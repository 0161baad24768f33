"""The `vlarft` command line. Every command imports its heavy dependencies lazily.

Bad input anywhere (sim.errors.InputError, a click usage error) ends in one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from typer._click import exceptions as click_exc
from typer.exceptions import Abort, Exit

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    name="vlarft",
    help="VLA-RFT studio: collect MetaWorld episodes, train world models and policies, fine-tune with GRPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _register() -> None:
    from cli import data_cmds, policy_cmds, reward_cmds, rft_cmds, sim_cmds, studio_cmds, wm_cmds

    for module in (sim_cmds, data_cmds, wm_cmds, policy_cmds, rft_cmds, reward_cmds, studio_cmds):
        module.register(app)


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    from sim.errors import InputError

    _register()
    try:
        app(args=argv, standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        typer.echo(f"error: {where}{exc.format_message()}", err=True)
        sys.exit(2)
    except click_exc.ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except InputError as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
