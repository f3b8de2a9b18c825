"""The adapter base class: one class per task type, registered in :data:`loupe_bench.tasks.TASK_TYPES`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import SpecError
from .common import SplitOutput
from .spec import TaskSpec


class TaskAdapter:
    """Runs one task protocol on one model for one split, through the ``VLModel`` interface only.

    Subclasses define ``Options`` (a dataclass of the type-specific spec options, with defaults) and :meth:`run`.
    """

    @dataclass
    class Options:
        pass

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.opts = type(self).Options(**spec.options)

    @classmethod
    def validate_spec(cls, spec: TaskSpec) -> None:
        """Raise :class:`~loupe_bench.errors.SpecError` for specs this adapter cannot run."""

    @classmethod
    def known_metrics(cls, options: Dict[str, Any]) -> Optional[List[str]]:
        """The metric names this adapter computes with these (validated) ``options``; a spec asking for any other
        name is refused at load time, so a typo is never a silently missing column. ``None``: the adapter checks its
        metric names in :meth:`validate_spec`."""
        return None

    @classmethod
    def missing_metrics(cls, spec: TaskSpec) -> Dict[str, str]:
        """Metrics of ``spec`` this machine cannot compute (``metric -> reason and remedy``), checked before a run.

        A pipeline calls this up front so that a user learns at the start, not from the report, which numbers will
        be missing. The default: nothing is missing.
        """
        return {}

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        raise NotImplementedError


class BoxTaskAdapter(TaskAdapter):
    """A task that scores boxes given in normalised image coordinates (detection, grounding, region
    classification, the token probe): the image must not be cropped."""

    @classmethod
    def validate_spec(cls, spec: TaskSpec) -> None:
        if spec.image.crop != "none":
            raise SpecError(f"{spec.name}: box tasks need image.crop: none (boxes are normalised to the image)")
