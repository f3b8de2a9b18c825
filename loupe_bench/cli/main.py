"""``loupe-bench`` click group.

Sub-commands are imported lazily (``COMMANDS`` maps a name to ``module:attribute``) so that ``--help`` answers
without importing torch. A :class:`~loupe_bench.errors.LoupeBenchError` becomes one line on stderr and exit 2.
"""
from __future__ import annotations

import importlib
import importlib.util  # a submodule: `import importlib` alone does not bind it
import os
import sys
from typing import Dict, List, Optional

import click

from .._version import __version__

#: Exit codes (docs/architecture.md, "Errors"): 0 success; 1 findings of `data check` / `check` only; 2 bad input
#: or environment (one line on stderr); 3 an internal error (a bug: one line, the traceback with TRACEBACK_ENV=1).
INTERNAL_ERROR = 3
TRACEBACK_ENV = "LOUPE_BENCH_TRACEBACK"

# name -> "module:attribute" of a click command or group. Add new commands here.
COMMANDS: Dict[str, str] = {
    "data": "loupe_bench.cli.data:data",
    "list": "loupe_bench.cli.listing:list_cmd",
    "train": "loupe_bench.cli.train:train_cmd",
    "eval": "loupe_bench.cli.evaluate:eval_cmd",
    "report": "loupe_bench.cli.report:report_cmd",
    "compare": "loupe_bench.cli.report:compare_cmd",
    "check": "loupe_bench.cli.report:check_cmd",
    "reproduce": "loupe_bench.cli.reproduce:reproduce",
    "bench": "loupe_bench.cli.bench:bench_cmd",
    "export": "loupe_bench.cli.export:export_cmd",
}

SHORT_HELP: Dict[str, str] = {
    "data": "Generate the synthetic world, validate data sets, extract phrases.",
    "list": "List what the registries hold (datasets, tasks, models, recipes).",
    "train": "Train a model with a recipe (CLIP, FILIP and LOUPE share one loop).",
    "eval": "Evaluate models on task protocols; one result JSON per (model, task, split).",
    "report": "Render results as console table, CSV, Markdown and HTML.",
    "compare": "Compare reproduced results with published paper numbers.",
    "check": "Regression gate: compare results with a committed reference.",
    "reproduce": "Run a whole reproduction (synthetic world offline, or the paper's benchmarks).",
    "bench": "Benchmarks: every figure a ratio measured side by side in one run.",
    "export": "Export results in another tool's layout (clip_benchmark).",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(n for n in COMMANDS if _available(n))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in COMMANDS or not _available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SHORT_HELP.get(n, "")) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="loupe-bench")
def cli() -> None:
    """loupe-bench: LOUPE, CLIP and FILIP under identical protocols.

    Start with `loupe-bench reproduce synthetic` (offline, CPU) or `loupe-bench data synth --out DIR`.
    """


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: user and environment errors are one line on stderr and exit code 2; an
    unexpected exception is one line and exit 3 (its traceback with ``LOUPE_BENCH_TRACEBACK=1``)."""
    from ..errors import LoupeBenchError

    args = sys.argv[1:] if argv is None else list(argv)
    bad = next((a for a in args if "\0" in str(a)), None)
    if bad is not None:  # no path or name holds a NUL; the OS would refuse it deep inside a command
        click.echo(f"error: argument {_one_line(repr(str(bad)))[:200]} holds a NUL character", err=True)
        sys.exit(2)
    try:
        rv = cli.main(args=args, prog_name="loupe-bench", standalone_mode=False)
    except LoupeBenchError as exc:
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        ctx = exc.ctx
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except MemoryError:
        click.echo("error: out of memory (an input asked for more memory than this machine has)", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: {_os_error_line(exc)}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug of ours: one line (exit 3), the traceback only on request
        if os.environ.get(TRACEBACK_ENV):
            raise
        kind = type(exc).__name__
        text = _one_line(str(exc))[:300]
        click.echo(f"error: internal error ({kind}: {text}); rerun with {TRACEBACK_ENV}=1 for the traceback "
                   "and report it", err=True)
        sys.exit(INTERNAL_ERROR)
    else:
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    """A message on one line: line breaks and runs of spaces become single spaces."""
    return " ".join(str(text).split())


def _os_error_line(exc: OSError) -> str:
    """An environment error (read-only folder, disk full, permission) as one line naming the file."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return _one_line(f"{': '.join(names)}: {reason}" if names else reason)


if __name__ == "__main__":  # pragma: no cover
    main()
