"""Where the YAML specs live, for a source checkout and for an installed wheel.

The top-level folders ``baselines/`` (model specs of compared models), ``tasks/`` (protocol specs) and
``results/paper`` (published numbers) are shipped inside the wheel as ``loupe_bench/_specs/<name>`` (see
``pyproject.toml``). In a source checkout (editable install, or running from the repo) the top-level folders are
used directly. LOUPE's own model specs and the training recipes are package data of their modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import yaml

from .errors import DataError, SpecError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def spec_dir(name: str) -> Path:
    """Folder holding the shipped specs called ``name`` (``baselines``, ``tasks``, ``paper``)."""
    shipped = PACKAGE_DIR / "_specs" / name
    if shipped.is_dir():
        return shipped
    source = REPO_DIR / ("results/paper" if name == "paper" else name)
    if source.is_dir():
        return source
    raise SpecError(f"spec folder {name!r} not found (looked in {shipped} and {source})")


def spec_files(name: str, patterns=("*.yaml", "*.yml", "*.json")) -> List[Path]:
    folder = spec_dir(name)
    out: List[Path] = []
    for pattern in patterns:
        out.extend(folder.glob(pattern))
    return sorted(out)


def load_yaml(path) -> Dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise DataError(f"malformed YAML: {exc}".replace("\n", " "), file=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError("expected a YAML mapping at the top level", file=str(path))
    return data
