"""The adapter base class: one class per task type, registered in :data:`loupe_bench.tasks.TASK_TYPES`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import SpecError
from ..specs import from_mapping
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
        parsed = spec.parsed_options
        self.opts = parsed if isinstance(parsed, self.Options) else self.parse_options(spec)

    @classmethod
    def parse_options(cls, spec: TaskSpec) -> Any:
        """The spec's type-specific ``options`` mapping as this adapter's :class:`Options`: the one conversion, done
        by :func:`~loupe_bench.tasks.load_task` (which keeps the result as ``spec.parsed_options``, the adapter's
        ``opts``, and ``asdict`` of it as the spec's normalised options); a spec built without it is converted when
        its adapter is made. Strict (:func:`~loupe_bench.specs.from_mapping`): an unknown key or a wrong type is a
        :class:`~loupe_bench.errors.SpecError` naming the spec and the field; missing keys take their defaults;
        ``Options.__post_init__`` normalises and checks the values."""
        return from_mapping(cls.Options, spec.options, spec.source or spec.name, "options")

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
