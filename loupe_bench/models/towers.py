"""Image towers (timm ViT / Swin) and text towers (transformers BERT) that expose token features.

An image tower returns ``(pooled [B, W], tokens [B, N, W], grid (H, W))`` with the image ``[CLS]`` (and any other
prefix tokens) dropped from ``tokens``; a Swin tower's NHWC map is flattened row-major, so token ``n`` sits at row
``n // W``. A text tower returns ``(pooled [B, W], tokens [B, L, W])`` where ``pooled`` is the ``[CLS]`` state.

Tower kinds are found through registries (:data:`IMAGE_TOWERS`, :data:`TEXT_TOWERS`) keyed by the spec's ``kind``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, SpecError
from ..registry import Registry
from ..specs import from_mapping
from .spec_fields import bert_config_error, choice_check, timm_kwargs_error, type_check

IMAGE_TOWERS = Registry("image tower kind")
TEXT_TOWERS = Registry("text tower kind")


@dataclass
class ImageTowerCfg:
    """Image tower spec (``image_tower:`` in a model spec); the size keywords of ``kwargs`` are checked
    (:func:`~loupe_bench.models.spec_check.timm_kwargs_error`).

    Attributes:
        kind: tower kind in :data:`IMAGE_TOWERS` (``timm``).
        name: timm architecture name, e.g. ``vit_base_patch16_224`` or ``swin_large_patch4_window7_224``.
        kwargs: keyword overrides passed to ``timm.create_model`` (tiny configs: ``img_size``, ``patch_size``,
            ``embed_dim``, ``depth`` ...).
        pretrained: ``None`` (random init), a path to a ``.safetensors`` / ``.pth`` state dict, or ``"hub"`` to let
            timm download the named weights (online only).
    """

    kind: str = field(default="timm", metadata={"check": type_check(str)})
    name: str = field(default="vit_base_patch16_224", metadata={"check": type_check(str)})
    kwargs: Dict[str, Any] = field(default_factory=dict, metadata={"check": timm_kwargs_error})
    pretrained: Optional[str] = field(default=None, metadata={"check": type_check(str, optional=True)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ImageTowerCfg":
        return from_mapping(cls, data, "model spec", "image_tower")


@dataclass
class TextTowerCfg:
    """Text tower spec (``text_tower:`` in a model spec); the sizes of ``config`` are checked
    (:func:`~loupe_bench.models.spec_check.bert_config_error`).

    Attributes:
        kind: tower kind in :data:`TEXT_TOWERS` (``bert``).
        config: ``BertConfig`` fields for a from-scratch tower (``vocab_size`` is taken from the tokenizer).
        pretrained: ``None``, a local HF-format directory, or a hub id (online only).
        pool: ``cls`` (the ``[CLS]`` state, BERT's and CLIP's convention) or ``mean`` (the attention-masked mean of
            the token states, ``sum_t m_t h_t / sum_t m_t``; small from-scratch towers break the contrastive
            symmetry far sooner with it).
    """

    kind: str = field(default="bert", metadata={"check": type_check(str)})
    config: Dict[str, Any] = field(default_factory=dict, metadata={"check": bert_config_error})
    pretrained: Optional[str] = field(default=None, metadata={"check": type_check(str, optional=True)})
    pool: str = field(default="cls", metadata={"check": choice_check("cls", "mean")})

    def __post_init__(self):
        if self.pool not in ("cls", "mean"):
            raise SpecError(f"text_tower.pool must be 'cls' or 'mean', got {self.pool!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TextTowerCfg":
        return from_mapping(cls, data, "model spec", "text_tower")


class ImageTowerOutput(NamedTuple):
    """Unprojected image tower output: ``pooled [B, W]``, ``tokens [B, N, W]``, ``grid (H, W)``."""

    pooled: Tensor
    tokens: Tensor
    grid: Tuple[int, int]


class TextTowerOutput(NamedTuple):
    """Unprojected text tower output: ``pooled [B, W]`` (the ``[CLS]`` state) and ``tokens [B, L, W]``."""

    pooled: Tensor
    tokens: Tensor


def hub_offline() -> bool:
    """True when the environment forbids hub downloads (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in
               ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_state_file(path: os.PathLike) -> Dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` (header checked against the file first) or a ``torch.save`` file
    (``weights_only=True``); see :mod:`~loupe_bench.models.untrusted`.

    A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped; every key must be a string and
    every value a tensor. Any refusal is one :class:`CheckpointError` line naming the file.
    """
    from .untrusted import load_safetensors, load_torch_file, tensor_state

    path = Path(path)
    if path.suffix == ".safetensors":
        return tensor_state(load_safetensors(path), path)
    return tensor_state(load_torch_file(path), path)


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is a :class:`CheckpointError`."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_short(shapes)}")
        raise CheckpointError(f"{source}: checkpoint does not match the model: " + "; ".join(parts))
    module.load_state_dict(dict(state), strict=True)


def _short(keys, limit: int = 8) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


@IMAGE_TOWERS.register("timm", help="timm ViT / Swin image tower exposing patch tokens")
class TimmImageTower(nn.Module):
    """A timm backbone without classifier, returning pooled and patch-token features.

    ViT-like models (``num_prefix_tokens`` > 0): ``pooled`` is the ``[CLS]`` output, ``tokens`` the patch outputs.
    Swin-like models (NHWC feature map): ``pooled`` is the mean over the map, ``tokens`` the flattened map.
    """

    def __init__(self, cfg: ImageTowerCfg, load_pretrained: bool = True):
        super().__init__()
        import timm

        self.cfg = cfg
        use_hub = load_pretrained and cfg.pretrained == "hub"
        if use_hub and hub_offline():
            raise CheckpointError(
                f"image tower {cfg.name}: pretrained 'hub' needs network access but HF_HUB_OFFLINE is set; "
                "give a local .safetensors/.pth file instead"
            )
        try:
            self.model = timm.create_model(cfg.name, pretrained=use_hub, num_classes=0, **cfg.kwargs)
        except (RuntimeError, ValueError, TypeError) as exc:
            if "Unknown model" in str(exc) or isinstance(exc, TypeError):
                raise SpecError(f"image tower {cfg.name!r}: {exc}") from None
            raise
        self.width = int(self.model.num_features)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        if load_pretrained and cfg.pretrained not in (None, "hub"):
            self.load_file(cfg.pretrained)

    @property
    def pretrained_mean_std(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        pc = getattr(self.model, "pretrained_cfg", {}) or {}
        return tuple(pc.get("mean", (0.5, 0.5, 0.5))), tuple(pc.get("std", (0.5, 0.5, 0.5)))

    def load_file(self, path: str) -> None:
        """Load timm weights from a local file; the classifier head is ignored, anything else must match."""
        state = load_state_file(path)
        filt = getattr(sys.modules.get(type(self.model).__module__), "checkpoint_filter_fn", None)
        if filt is not None:
            try:
                state = filt(state, self.model)
            except Exception:  # a filter expecting another layout: compare the raw keys instead
                pass
        head = (getattr(self.model, "pretrained_cfg", {}) or {}).get("classifier") or "head"
        heads = (head,) if isinstance(head, str) else tuple(head)
        own = self.model.state_dict()
        state = {k: v for k, v in state.items()
                 if k in own or not any(k == h or k.startswith(h + ".") for h in heads)}
        load_strict(self.model, state, f"image tower {self.cfg.name} ({path})")

    @property
    def supports_token_drop(self) -> bool:
        """True for ViT-like towers (a token sequence through ``blocks``), where hidden patches can be dropped."""
        m = self.model
        return all(hasattr(m, a) for a in ("patch_embed", "_pos_embed", "blocks", "norm")) and \
            not hasattr(m, "layers")

    def _split(self, last_blocks: Optional[int]) -> int:
        depth = len(self.model.blocks)
        k = depth if last_blocks is None else max(1, min(int(last_blocks), depth))
        return depth - k

    def token_states(self, pixels: Tensor, last_blocks: Optional[int] = None) -> Tensor:
        """Token states ``[B, P + N, W]`` (``P`` prefix tokens first) *before* the last ``last_blocks`` blocks
        (``None``: before every block, i.e. patch + position embeddings). With :meth:`finish_states` on all tokens
        this reproduces :meth:`forward`'s ``pooled``; on a subset of the patch tokens it encodes the masked image
        with the hidden patches **dropped** (not attended to), which is what a token-drop game needs."""
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(pixels))))
        for blk in m.blocks[: self._split(last_blocks)]:
            x = blk(x)
        return x

    def run_blocks(self, states: Tensor, last_blocks: Optional[int] = None,
                   attn_mask: Optional[Tensor] = None) -> Tensor:
        """The last ``last_blocks`` blocks and the final norm on token states ``[R, L, W]``: token states ``[R, L, W]``.

        ``attn_mask`` (bool, broadcastable to ``[R, heads, L, L]``, True = attend) is passed to every block: a key
        mask ``[R, 1, 1, L]`` for padding, or a block-diagonal ``[R, 1, L, L]`` for rows that pack several masked
        images (:class:`~loupe_bench.models.masked_game.MaskedTowerGame` with ``pack``)."""
        m = self.model
        x = states
        for blk in m.blocks[self._split(last_blocks):]:
            x = blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)
        return m.norm(x)

    def finish_states(self, states: Tensor, last_blocks: Optional[int] = None,
                      valid: Optional[Tensor] = None) -> Tensor:
        """The last ``last_blocks`` blocks, the final norm and the pooling of :meth:`forward` on ``states
        [Q, P + k, W]``: pooled ``[Q, W]`` (``[CLS]`` when the tower has a prefix token, else the token mean).

        ``valid [Q, P + k]`` (bool, optional) marks padding: tokens where it is False are neither attended to (a key
        mask in every block) nor pooled, so a row padded from ``k'`` to ``k`` tokens gives what the unpadded
        ``[P + k']`` row gives (up to float round-off). Rows of different lengths then share one tower call."""
        mask = None if valid is None else valid[:, None, None, :]  # [Q, 1, 1, L]: True = attend
        x = self.run_blocks(states, last_blocks, mask)
        n_prefix = self.num_prefix_tokens
        if n_prefix > 0:
            return x[:, 0]
        if valid is None:
            return x[:, n_prefix:].mean(dim=1)
        w = valid[:, n_prefix:, None].to(x.dtype)
        return (x[:, n_prefix:] * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, pixels: Tensor) -> ImageTowerOutput:
        x = self.model.forward_features(pixels)
        if x.ndim == 4:  # Swin: NHWC map
            b, h, w, c = x.shape
            tokens = x.reshape(b, h * w, c)
            return ImageTowerOutput(tokens.mean(dim=1), tokens, (h, w))
        n_prefix = self.num_prefix_tokens
        tokens = x[:, n_prefix:]
        pooled = x[:, 0] if n_prefix > 0 else tokens.mean(dim=1)
        grid = tuple(int(g) for g in self.model.patch_embed.grid_size)
        return ImageTowerOutput(pooled, tokens, grid)  # type: ignore[arg-type]


def _text_model_from_config(src: Any) -> Any:
    """A transformers model built (random weights) from the config of a local folder (its ``config.json`` sizes
    checked first, :func:`~loupe_bench.models.hf_folder.check_hf_config`) or of a hub id in the HF cache; a config
    transformers refuses is one line naming it."""
    from transformers import AutoConfig, AutoModel

    from .hf_folder import check_hf_config

    folder = Path(src).expanduser()
    if folder.is_dir():
        check_hf_config(folder / "config.json")
    ref = str(folder) if folder.is_dir() else str(src)
    try:
        conf = AutoConfig.from_pretrained(ref, local_files_only=True)
        return AutoModel.from_config(conf, add_pooling_layer=False)
    except Exception as exc:  # transformers on a user's config: any failure is the config's fault
        raise CheckpointError(f"text tower config {ref}: not a text model config transformers accepts "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _pretrained_text_model(src: str) -> Any:
    """A pretrained transformers text model from a local folder (checked first: regular files, config sizes,
    safetensors headers) or, online, a hub id; any failure to read it is one line naming it."""
    from transformers import AutoModel

    local = Path(src).expanduser()
    if not local.is_dir() and hub_offline():
        raise CheckpointError(f"text tower {src!r}: not a local directory and HF_HUB_OFFLINE is set")
    if local.is_dir():
        from .hf_folder import check_hf_config
        from .untrusted import check_safetensors, regular_files_of

        regular_files_of(local)
        check_hf_config(local / "config.json")
        if (local / "model.safetensors").is_file():
            check_safetensors(local / "model.safetensors")
    try:
        return AutoModel.from_pretrained(str(local) if local.is_dir() else src, add_pooling_layer=False,
                                         local_files_only=local.is_dir(), weights_only=True)
    except Exception as exc:  # transformers / torch on a user's files: any failure is the folder's fault
        from .untrusted import torch_refusal

        raise CheckpointError(f"text tower {src!r}: {torch_refusal(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


@TEXT_TOWERS.register("bert", help="transformers BERT text tower (from a BertConfig or a local HF directory)")
class BertTextTower(nn.Module):
    """A transformers BERT encoder; ``pooled`` is the last hidden state of ``[CLS]`` (position 0), or the masked
    mean of the token states with ``pool: mean``."""

    def __init__(self, cfg: TextTowerCfg, vocab_size: int, max_length: int, pad_id: int = 0,
                 load_pretrained: bool = True, config_dir: Optional[Path] = None):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.cfg = cfg
        if config_dir is not None:  # rebuilding a saved model: architecture only, weights follow
            self.model = _text_model_from_config(config_dir)
        elif cfg.pretrained and load_pretrained:
            self.model = _pretrained_text_model(cfg.pretrained)
        elif cfg.pretrained:
            self.model = _text_model_from_config(cfg.pretrained)
        else:
            kw = dict(cfg.config)
            kw.setdefault("max_position_embeddings", max(512, max_length))
            kw.update(vocab_size=vocab_size, pad_token_id=pad_id)
            self.model = BertModel(BertConfig(**kw), add_pooling_layer=False)
        self.width = int(self.model.config.hidden_size)

    def save_config(self, directory: Path) -> None:
        """The transformers config, written atomically and only when it changes (``atomic_write_dir``)."""
        from ..utils.io import atomic_write_dir

        atomic_write_dir(directory, lambda d: self.model.config.save_pretrained(str(d)))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextTowerOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        if self.cfg.pool == "mean":
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            return TextTowerOutput((h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0), h)
        return TextTowerOutput(h[:, 0], h)
