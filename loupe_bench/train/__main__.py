"""``python -m loupe_bench.train ARGS`` (and ``torchrun --nproc_per_node N -m loupe_bench.train ARGS``):
the ``loupe-bench train`` command, with the same one-line errors and exit code 2."""
from __future__ import annotations

import sys


def main() -> None:
    from ..cli.main import main as cli_main

    cli_main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
