"""How batches reach the Trainer: seeded samplers, sharding across processes, data loaders.

Two paths, chosen automatically per dataset (:func:`make_source`):

- **in memory** (:class:`TensorSource`): an array of images or table rows small enough to
  preprocess once (below ``PREPARE_LIMIT`` bytes as float32) is preprocessed up front into one
  tensor, and a batch is an index into it. This is what makes small runs fast: no per-batch
  resize, no collate, no worker processes.
- **tokenized once** (:class:`TokenSource`): a text dataset is tokenized up front (unpadded
  token ids); a batch is padded to its longest text, and evaluation batches group texts of
  similar length (:func:`eval_batches`), so little compute goes to padding.
- **streaming** (:class:`LoaderSource`): anything else (lazy image folders, IDX files, lazy text,
  large arrays) goes through a :class:`torch.utils.data.DataLoader` over a map-style
  :class:`DomainItems` with a collate that knows the modality (the model's ``preprocess`` on
  the raw batch: resize + normalise for images, tokenisation for text), optionally in worker
  processes (``num_workers``).

Both take their indices from the same samplers, so a run gives the same batches on either path.
Under several processes (``torchrun``, ``accelerate launch``, ``--num-processes``) every
sampler draws the *global* order from a generator seeded identically on every rank and hands
each rank its own slice of each global batch (:func:`shard`): every sample is seen exactly
once per epoch across the ranks, and with equal slices the mean of the ranks' gradients is the
gradient of the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

#: Above this many bytes (as float32 model inputs) a dataset streams through a DataLoader
#: instead of being preprocessed once up front.
PREPARE_LIMIT = 2 * 1024**3


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's slice of a global batch: contiguous, sizes differing by at most one."""
    if world == 1:
        return idx
    bounds = np.linspace(0, len(idx), world + 1).round().astype(int)
    return idx[bounds[rank] : bounds[rank + 1]]


class EpochSampler:
    """Global batches of training indices for one epoch, from a seeded generator.

    ``steps=None``: one shuffled pass over ``n`` samples (``torch.randperm``); the last batch
    may be short, and is dropped when it would give any rank fewer than two samples (a batch
    of one breaks BatchNorm in training mode). ``steps=k``: exactly ``k`` full batches from
    consecutive shuffled passes (a new permutation whenever a pass is used up; the leftover of
    a pass carries over), for methods that count an epoch in steps (domain adaptation on a
    small source with a larger target).

    The generator is the caller's; its state is checkpointed with the run, so a resumed fit
    draws the same batches.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, *, steps: int | None = None,
                 world: int = 1):
        self.n, self.batch_size, self.gen, self.steps, self.world = n, batch_size, generator, steps, world
        self._left = np.zeros(0, dtype=np.int64)  # the unused tail of the last pass (steps mode)

    def __len__(self) -> int:
        return self.steps if self.steps is not None else max(1, math.ceil(self.n / self.batch_size))

    def epoch(self) -> Iterator[np.ndarray]:
        if self.steps is None:
            perm = torch.randperm(self.n, generator=self.gen).numpy()
            for s in range(0, len(perm), self.batch_size):
                idx = perm[s : s + self.batch_size]
                if len(idx) < 2 * self.world and len(perm) > 1:
                    continue
                yield idx
            return
        for _ in range(self.steps):
            while len(self._left) < self.batch_size:
                self._left = np.concatenate([self._left, torch.randperm(self.n, generator=self.gen).numpy()])
            idx, self._left = self._left[: self.batch_size], self._left[self.batch_size :]
            yield idx

    def state_dict(self) -> dict:
        return {"left": torch.from_numpy(self._left.copy())}

    def load_state_dict(self, state: dict) -> None:
        self._left = state["left"].numpy().astype(np.int64)


class DomainItems(torch.utils.data.Dataset):
    """A :class:`~transferkit.data.DomainDataset` as a map-style dataset of raw inputs.

    ``dataset[i]`` is the raw input ``i`` (an image array, a table row, a string), decoded
    lazily when the dataset's inputs are lazy; ``__getitems__`` fetches a whole batch at once
    (fancy indexing of arrays and of lazy sequences that support it). Picklable when the
    inputs are, so worker processes can read it.
    """

    def __init__(self, dataset):
        self.inputs = dataset.inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[int(i)]

    def __getitems__(self, idx):
        inp = self.inputs
        if isinstance(inp, np.ndarray):
            return inp[np.asarray(idx)]
        return [inp[int(i)] for i in idx]


class Collate:
    """Raw batch -> model inputs: the model's ``preprocess`` (images resized and normalised,
    text tokenised, tables as float32), run in the worker when there are workers."""

    def __init__(self, model):
        self.preprocess = model.preprocess

    def __call__(self, batch):
        if isinstance(batch, list) and batch and isinstance(batch[0], np.ndarray):
            shapes = {b.shape for b in batch}
            if len(shapes) == 1:
                batch = np.stack(batch)
        return self.preprocess(batch)


class _BatchList(torch.utils.data.Sampler):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TensorSource:
    """Inputs preprocessed once into one tensor; ``batch(idx)`` indexes it."""

    streaming = False

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def batch(self, idx: np.ndarray):
        return self.tensor[torch.as_tensor(idx)]

    def batches(self, index_batches) -> Iterator:
        for idx in index_batches:
            yield idx, self.batch(idx)


class LoaderSource:
    """Inputs streamed through a :class:`~torch.utils.data.DataLoader` (lazy decoding, the
    model's preprocessing as collate, ``num_workers`` processes)."""

    streaming = True

    def __init__(self, model, dataset, num_workers: int = 0):
        self.items, self.collate, self.num_workers = DomainItems(dataset), Collate(model), int(num_workers)

    def batch(self, idx: np.ndarray):
        return self.collate(self.items.__getitems__(idx))

    def batches(self, index_batches) -> Iterator:
        """``(idx, inputs)`` for each index batch, in order; the batches are decoded and
        preprocessed in ``num_workers`` processes ahead of the training step."""
        index_batches = [np.asarray(b) for b in index_batches]
        if self.num_workers == 0:
            for idx in index_batches:
                yield idx, self.batch(idx)
            return
        loader = torch.utils.data.DataLoader(self.items, batch_sampler=_BatchList(index_batches),
                                             collate_fn=self.collate, num_workers=self.num_workers,
                                             pin_memory=torch.cuda.is_available())
        yield from zip(index_batches, loader)


#: Text datasets are tokenized once per fit (:class:`TokenSource`) and evaluated in batches of
#: similar length (:func:`eval_batches` with ``lengths``); ``False`` restores the per-batch
#: tokenization and the input-order evaluation batches (``benchmarks/text_speed.py`` times both).
TOKEN_CACHE = True
LENGTH_BUCKETS = True


class TokenSource:
    """A text dataset tokenized once (unpadded token ids, :meth:`HFBackbone.tokenize`); a batch
    is padded to its longest text, exactly what the per-batch tokenization gives."""

    streaming = False

    def __init__(self, backbone, dataset):
        self.backbone = backbone
        self.tokens = backbone.tokenize(dataset.inputs)
        self.lengths = self.tokens.lengths

    def batch(self, idx: np.ndarray):
        return self.backbone.collate(self.tokens, idx)

    def batches(self, index_batches) -> Iterator:
        for idx in index_batches:
            yield idx, self.batch(idx)


def text_backbone(model):
    """The text backbone whose tokenizer ``model.preprocess`` runs (the model itself, or its
    ``backbone``/``model`` attribute, a few wrappers deep), else ``None``.

    Every transferkit wrapper (``TransferModel``, the feature-level adapter's model) hands
    ``preprocess`` to what it wraps, so tokenizing with that backbone gives the same inputs."""
    m = model
    for _ in range(4):
        if m is None:
            return None
        spec = getattr(m, "spec", None)
        if callable(getattr(m, "tokenize", None)) and callable(getattr(m, "collate", None)) \
                and getattr(spec, "modality", None) == "text":
            return m
        m = getattr(m, "backbone", None) if hasattr(m, "backbone") else getattr(m, "model", None)
    return None


def token_source(model, dataset) -> TokenSource | None:
    """A :class:`TokenSource` for a text dataset whose model tokenizes, else ``None`` (other
    modalities, lazy inputs, or more than :data:`PREPARE_LIMIT` bytes of token ids at most)."""
    if not TOKEN_CACHE or dataset.modality != "text" or not isinstance(dataset.inputs, (list, tuple, np.ndarray)):
        return None
    bb = text_backbone(model)
    if bb is None or len(dataset) == 0:
        return None
    if 4 * len(dataset) * int(getattr(bb, "max_length", 512)) > PREPARE_LIMIT:
        return None
    return TokenSource(bb, dataset)


def in_memory_tensor(model, dataset, batch: int = 256) -> torch.Tensor | None:
    """The whole dataset preprocessed once, or ``None`` when it should stream (lazy inputs,
    text, or more than :data:`PREPARE_LIMIT` bytes of model inputs)."""
    inp = dataset.inputs
    if not isinstance(inp, np.ndarray) or dataset.modality not in ("image", "tabular") or len(inp) == 0:
        return None
    spec = getattr(model, "spec", None)
    size = getattr(spec, "input_size", None)
    per = 4 * (int(np.prod(size)) if size else int(np.prod(inp.shape[1:])))
    if per * len(inp) > PREPARE_LIMIT:
        return None
    return torch.cat([model.preprocess(inp[s : s + batch]) for s in range(0, len(inp), batch)])


def make_source(model, dataset, num_workers: int = 0):
    """The in-memory path when the dataset is small enough (text: tokenized once), else the
    data-loader path."""
    tok = token_source(model, dataset)
    if tok is not None:
        return tok
    t = in_memory_tensor(model, dataset)
    return TensorSource(t) if t is not None else LoaderSource(model, dataset, num_workers)


def eval_batches(n: int, batch_size: int, rank: int = 0, world: int = 1, lengths=None) -> list[np.ndarray]:
    """This rank's evaluation batches of a contiguous ``1/world`` of ``0..n-1``: in order, or,
    with ``lengths`` (tokens per text), in batches of similar length, longest first (see
    :func:`~transferkit.backbones.text.length_batches`): the caller puts the outputs back in
    order by the returned indices."""
    part = shard(np.arange(n), rank, world)
    if lengths is not None and LENGTH_BUCKETS and len(part):
        from ..backbones.text import length_batches

        return [part[b] for b in length_batches(np.asarray(lengths)[part], batch_size)]
    return [part[s : s + batch_size] for s in range(0, len(part), batch_size)]
