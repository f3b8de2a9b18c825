"""Where the YAML specs live, for a source checkout and for an installed wheel.

The top-level folders ``baselines/`` (model specs of compared models), ``tasks/`` (protocol specs),
``results/paper`` (published numbers) and ``results/reference`` (committed reference runs of the regression gate) are
shipped inside the wheel as ``loupe_bench/_specs/<name>`` (see ``pyproject.toml``). In a source checkout (editable install, or running from the repo) the top-level folders are
used directly. LOUPE's own model specs and the training recipes are package data of their modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from .errors import DataError, SpecError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


# shipped name -> folder in a source checkout (names not listed are top-level folders of the same name)
SOURCE_DIRS: Dict[str, str] = {"paper": "results/paper", "reference": "results/reference"}


def spec_dir(name: str) -> Path:
    """Folder holding the shipped specs called ``name`` (``baselines``, ``tasks``, ``paper``, ``reference``)."""
    shipped = PACKAGE_DIR / "_specs" / name
    if shipped.is_dir():
        return shipped
    source = REPO_DIR / SOURCE_DIRS.get(name, name)
    if source.is_dir():
        return source
    raise SpecError(f"spec folder {name!r} not found (looked in {shipped} and {source})")


def spec_files(name: str, patterns=("*.yaml", "*.yml", "*.json")) -> List[Path]:
    folder = spec_dir(name)
    out: List[Path] = []
    for pattern in patterns:
        out.extend(folder.glob(pattern))
    return sorted(out)


def list_references() -> List[Tuple[str, str]]:
    """Committed reference runs of the regression gate: ``(name, description)``."""
    import json

    out = []
    for f in spec_files("reference", patterns=("*.json",)):
        try:
            ref = json.loads(f.read_text(encoding="utf-8"))
            desc = f"{len(ref.get('rows', []))} gated rows, seeds {ref.get('seeds', '?')}"
        except (OSError, ValueError, AttributeError):
            desc = "(unreadable)"
        out.append((f.stem, desc))
    return out


def reference_path(name_or_path) -> Path:
    """Resolve ``--reference``: an existing file, else a committed reference by name (``synthetic-quick``).

    A bare name (no folder, no ``.json``) is looked up among the references shipped with the package
    (``results/reference`` in a checkout, ``loupe_bench/_specs/reference`` in a wheel); anything else is a path.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.is_file() or "/" in text or "\\" in text or path.suffix == ".json":
        return path
    folder = spec_dir("reference")
    named = folder / f"{text}.json"
    if not named.is_file():
        known = ", ".join(n for n, _ in list_references()) or "(none)"
        raise DataError(f"no committed reference named {text!r} (known: {known}; or give a path)", file=str(named))
    return named


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
