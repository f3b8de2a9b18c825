"""``loupe-bench`` click group.

Sub-commands are imported lazily (``COMMANDS`` maps a name to ``module:attribute``) so that ``--help`` answers
without importing torch. A :class:`~loupe_bench.errors.LoupeBenchError` becomes one line on stderr and exit 2.
"""
from __future__ import annotations

import importlib
import importlib.util  # a submodule: `import importlib` alone does not bind it
import sys
from typing import Dict, List, Optional

import click

from .._version import __version__

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
    """Console-script entry point: user errors are one line on stderr and exit code 2."""
    from ..errors import LoupeBenchError

    try:
        rv = cli.main(args=argv, prog_name="loupe-bench", standalone_mode=False)
    except LoupeBenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    else:
        sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
