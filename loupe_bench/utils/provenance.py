"""What produced a result: code version, package versions, device."""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict

from .._version import __version__

_PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "pycocotools", "numpy", "safetensors")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<git sha>[.dirty]`` when run from a git checkout, else the package version."""
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5,
            ).stdout.strip()
            return f"{__version__}+g{sha}" + (".dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return __version__


def package_versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_info(device: str = "cpu") -> Dict[str, object]:
    """Code version, package versions, machine and device, for every result and benchmark JSON."""
    info: Dict[str, object] = {
        "code_version": code_version(),
        "packages": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "device": str(device),
    }
    try:
        import os

        info["machine"]["cpu_count"] = os.cpu_count()  # type: ignore[index]
    except Exception:  # pragma: no cover
        pass
    if str(device).startswith("cuda"):
        import torch

        info["device_name"] = torch.cuda.get_device_name(0)
    return info
