r"""Source-free domain adaptation: a trained source model adapted on unlabeled target inputs alone.

Nothing of the source data is used, only the source model: a feature extractor :math:`g` (the
backbone) and the classifier it was trained with, :math:`h(f) = W f + b` (the backbone's
``source_head``). The classifier stays frozen (the *source hypothesis*); the feature extractor
is trained on the unlabeled target pool so that its features fit that hypothesis. Target labels
are never read: :func:`train_source_free` reads the pool's inputs only.

Methods (:data:`METHODS`):

- ``"shot"``: SHOT (Liang et al., 2020). Information maximisation (:func:`information_maximization`:
  confident and, over a batch, diverse predictions) plus :math:`\beta` times the cross-entropy
  to pseudo-labels from clustering the pool in feature space (:func:`shot_pseudo_labels`),
  recomputed at the start of every epoch.
- ``"shot_im"``: SHOT-IM, the same without pseudo-labels (:math:`\beta = 0`).
- ``"aad"``: AaD, "attracting and dispersing" (Yang et al., 2022): a memory bank of the pool's
  normalised features and predictions; each prediction is pulled towards those of its
  :math:`k` nearest neighbours in feature space and pushed away from the other predictions
  of its batch (:func:`aad_loss`). Chosen over NRC (Yang et al., 2021), which adds reciprocal
  and expanded neighbourhoods to the same bank: AaD is the authors' simpler successor and
  matches or beats NRC on their benchmarks.

Settings (fixed from the papers and their code before any target label was looked at)
------------------------------------------------------------------------------------------
Optimisation, for every method, is SHOT's digit recipe (``digit/uda_digit.py``): SGD with
Nesterov momentum 0.9, weight decay :math:`10^{-3}`, batches of 64, 30 epochs over the target,
learning rate :math:`\eta_t = \eta_0 (1 + 10\,t/T)^{-0.75}` at step :math:`t` of :math:`T`
with :math:`\eta_0 = 0.01`. SHOT's digit nets have a feature extractor and a bottleneck
(both trained at :math:`\eta_0` there; the 0.1x rate of SHOT's object-recognition code is for
ImageNet-pretrained trunks); here the backbone *is* the feature extractor, its last layer the
bottleneck, so every backbone parameter trains at :math:`\eta_0`. BatchNorm is in training mode
(its running statistics move to the target), as in SHOT; the pseudo-labels and AaD's initial
bank come from a pass in evaluation mode.

- SHOT's :math:`\beta = 0.1`: the authors' digit setting (their README: "SHOT (cls_par = 0.1)"
  for MNIST/USPS/SVHN; 0.3 is their object-recognition setting and the script's default).
  The IM weight is 1 and :math:`\epsilon = 10^{-5}` inside the logarithms, as in their code.
- AaD: neither AaD nor NRC reports digits. Their smallest benchmark, Office-31 (498 to 2,817
  target images; our digit pools hold about 900), runs with :math:`k = 3` neighbours,
  dispersion weight :math:`\alpha = 1` decayed as :math:`\alpha_t = \alpha (1 + 10\,t/T)^{-1}`
  (``office31_tar.sh``: ``--K 3 --beta 1``). AaD also trains the classifier; here it stays the
  frozen source hypothesis for every method (one predictor, ``source_head(backbone(x))``).

Checkpoint selection is the last epoch: there are no target labels to choose with.

References
----------
.. [1] J. Liang, D. Hu and J. Feng. "Do We Really Need to Access the Source Data? Source
   Hypothesis Transfer for Unsupervised Domain Adaptation." ICML 2020.
.. [2] S. Yang, Y. Wang, J. van de Weijer, L. Herranz and S. Jui. "Exploiting the Intrinsic
   Neighborhood Structure for Source-free Domain Adaptation" (NRC). NeurIPS 2021.
.. [3] S. Yang, Y. Wang, K. Wang, S. Jui and J. van de Weijer. "Attracting and Dispersing: A
   Simple Approach for Source-free Domain Adaptation" (AaD). NeurIPS 2022.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError

__all__ = ["METHODS", "SourceModel", "aad_loss", "information_maximization", "predict_outputs",
           "shot_pseudo_labels", "source_model", "train_source_free"]

METHODS = ("shot", "shot_im", "aad")
#: The backbones that ship with their source classifier (named in the error for one without).
SOURCE_MODELS = ("usps_cnn", "svhn_cnn", "mnist_cnn")
#: SHOT's and AaD's epsilon inside the logarithms of the entropies.
EPS = 1e-5
#: SHOT's pseudo-label weight on digits (the authors' README; 0.3 is their object setting).
SHOT_BETA = 0.1
#: AaD's Office-31 settings: neighbours, dispersion weight and the exponent of its decay.
AAD_NEIGHBORS = 3
AAD_ALPHA = 1.0
AAD_DECAY = 1.0
#: SHOT's optimiser (digit/uda_digit.py): SGD, Nesterov momentum, weight decay, lr decay.
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-3
LR_GAMMA, LR_POWER = 10.0, 0.75


# ---------------------------------------------------------------------------------- the model
class SourceModel(nn.Module):
    """The source model: ``head(backbone(x))`` with the source classifier frozen.

    ``features`` is the backbone (trained by adaptation); ``head`` an :class:`~torch.nn.Linear`
    whose parameters never require gradients (the source hypothesis, bit-identical after any
    adaptation). ``preprocess``, ``move_inputs`` and ``spec`` are the backbone's, so the batch
    sources of :mod:`transferkit.train.data` serve it as they serve a ``TransferModel``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head.requires_grad_(False)

    @property
    def spec(self):
        return self.backbone.spec

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    def preprocess(self, inputs):
        return self.backbone.preprocess(inputs)

    def move_inputs(self, batch, device):
        return self.backbone.move_inputs(batch, device)

    def features(self, x) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x) -> torch.Tensor:
        return self.head(self.backbone(x))

    def prepare(self, device) -> SourceModel:
        """On ``device``, image models in channels-last layout (faster convolutions on the CPU;
        the fitted and the reloaded model use the same layout, so they predict the same)."""
        self.to(device)
        if getattr(self.spec, "modality", None) == "image":
            self.to(memory_format=torch.channels_last)
        return self


def source_model(backbone: nn.Module, *, where: str = "backbone", pretrained: bool = True) -> SourceModel:
    """The :class:`SourceModel` of a backbone that carries its source classifier
    (``backbone.source_head = (W, b)``); a :class:`~transferkit.errors.ConfigError` names what
    to use instead when it carries none."""
    head = getattr(backbone, "source_head", None)
    name = getattr(getattr(backbone, "spec", None), "name", type(backbone).__name__)
    if head is None:
        why = " (pretrained=false builds it without its trained weights and classifier)" if not pretrained else ""
        raise ConfigError(f"{where}={name!r} carries no source classifier (source_head){why}; source-free "
                          "adaptation trains a source model through its own classifier: use "
                          f"{', '.join(SOURCE_MODELS)}, or a 'file:' model whose weights include its classifier.")
    W, b = (torch.as_tensor(t).detach().float() for t in head)
    d = int(getattr(backbone, "feature_dim", W.shape[-1]))
    if W.ndim != 2 or b.shape != (W.shape[0],) or W.shape[1] != d:
        raise DataError(f"{where}={name!r}: its source_head has shapes {tuple(W.shape)} and {tuple(b.shape)}, but "
                        f"a classifier of its {d}-d features needs (K, {d}) and (K,); the weights file is not this "
                        "backbone's.")
    lin = nn.Linear(d, int(W.shape[0]))
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return SourceModel(backbone, lin)


# ---------------------------------------------------------------------------------- the losses
def _entropy(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return -(p * torch.log(p + eps)).sum(-1)


def information_maximization(logits: torch.Tensor, eps: float = EPS) -> dict[str, torch.Tensor]:
    r"""SHOT's information-maximisation loss on a batch of logits ``(n, K)``:

    .. math::
        \mathcal{L}_{\mathrm{IM}} = \underbrace{-\frac{1}{n}\sum_{i=1}^{n}\sum_{k=1}^{K}
        p_{ik}\log(p_{ik}+\epsilon)}_{\text{entropy}}
        \; - \; \underbrace{\Bigl(-\sum_{k=1}^{K}\bar p_k\log(\bar p_k+\epsilon)\Bigr)}_{\text{diversity}},
        \qquad p_i = \mathrm{softmax}(z_i),\; \bar p = \frac{1}{n}\sum_i p_i,

    with :math:`\epsilon = 10^{-5}` as in SHOT's code. Low entropy makes each prediction
    confident; high diversity keeps the batch from collapsing onto one class. Its minimum,
    :math:`-\log K` (up to :math:`\epsilon`), is reached by one-hot predictions spread evenly
    over the classes.

    Returns ``{"loss", "entropy", "diversity"}`` (scalars).
    """
    p = torch.softmax(logits, dim=1)
    ent = _entropy(p, eps).mean()
    div = _entropy(p.mean(0), eps)
    return {"loss": ent - div, "entropy": ent, "diversity": div}


def shot_pseudo_labels(features, probs, *, rounds: int = 1) -> np.ndarray:
    r"""SHOT's self-supervised pseudo-labels: weighted k-means in feature space, cosine distance.

    Each feature gets a trailing 1 and is scaled to unit length (SHOT's code). Class centroids
    are the feature means weighted by the softmax outputs,

    .. math::
        c_k^{(0)} = \frac{\sum_i p_{ik}\, \hat f_i}{\sum_i p_{ik}},\qquad
        \hat y_i = \arg\min_k\, d_{\cos}(\hat f_i, c_k),

    then ``rounds`` refinements with hard assignments (:math:`c_k` the mean of the features
    labelled :math:`k`, relabel by the nearest centroid). A class no sample predicts (argmax)
    gets no centroid in the first pass, and an empty cluster none in a refinement, as in SHOT's
    object-recognition code (its digit code lacks the guard: an empty cluster's centroid is 0,
    whose cosine distance is undefined).

    Parameters
    ----------
    features : array-like of shape (n, d)
    probs : array-like of shape (n, K)
        The classifier's softmax outputs on the same samples.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    Fm = np.asarray(features, dtype=np.float64)
    P = np.asarray(probs, dtype=np.float64)
    if Fm.ndim != 2 or P.ndim != 2 or len(Fm) != len(P) or len(Fm) == 0:
        raise DataError(f"shot_pseudo_labels needs features (n, d) and probs (n, K) for the same n >= 1 samples, got "
                        f"{Fm.shape} and {P.shape}.")
    check_number("rounds", rounds, low=0, integer=True)
    Fm = np.hstack([Fm, np.ones((len(Fm), 1))])
    Fm /= np.linalg.norm(Fm, axis=1, keepdims=True)
    K = P.shape[1]
    weights = P
    active = np.bincount(P.argmax(1), minlength=K) > 0
    for _ in range(rounds + 1):
        C = weights.T @ Fm / (1e-8 + weights.sum(0))[:, None]
        norms = np.linalg.norm(C, axis=1)
        sim = (Fm @ C.T) / np.where(norms > 0, norms, 1.0)  # cosine similarity (the rows of Fm have norm 1)
        sim[:, ~active] = -np.inf
        labels = sim.argmax(1)
        weights = np.eye(K)[labels]
        active = np.bincount(labels, minlength=K) > 0
    return labels.astype(np.int64)


def aad_loss(probs: torch.Tensor, neighbour_probs: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    r"""AaD's loss on a batch: attract each prediction to its neighbours', disperse the batch.

    .. math::
        \mathcal{L} = -\frac{1}{n}\sum_{i=1}^{n}\sum_{j\in\mathcal{C}_i} p_i^\top s_j
        \; + \; \alpha\,\frac{1}{n}\sum_{i=1}^{n}\sum_{m\ne i} p_i^\top p_m,

    :math:`p_i` the batch's softmax outputs ``(n, K)``, :math:`s_j` the memory bank's stored
    predictions of the :math:`k` nearest neighbours :math:`\mathcal{C}_i` of sample :math:`i`
    (``neighbour_probs``, ``(n, k, K)``, constants), :math:`m` the other samples of the batch
    (gradients flow through both factors, as in the authors' code, whose ``kl_div`` of
    probabilities has the same gradient as the attraction term).

    Returns ``{"loss", "attract", "disperse"}`` (``attract`` is the first sum with its sign).
    """
    attract = -(neighbour_probs * probs[:, None, :]).sum((1, 2)).mean()
    gram = probs @ probs.T
    disperse = (gram.sum(1) - gram.diagonal()).mean()
    return {"loss": attract + alpha * disperse, "attract": attract, "disperse": disperse}


def _neighbours(f_norm: torch.Tensor, idx: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(n, k)`` of the ``k`` bank rows most cosine-similar to each row of ``f_norm``,
    the sample itself (bank row ``idx``) excluded."""
    sim = f_norm @ bank.T
    sim[torch.arange(len(idx), device=sim.device), idx] = -torch.inf
    return sim.topk(k, dim=1).indices


# ---------------------------------------------------------------------------------- passes
def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def _outputs(model: SourceModel, src, n: int, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, d)`` and logits ``(n, K)`` of every sample, in evaluation mode."""
    from ..nn.layout import to_channels_last

    was = model.training
    model.eval()
    feats, logits = [], []
    batches = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    for _, xb in src.batches(batches):
        f = model.features(to_channels_last(model.move_inputs(xb, device)))
        feats.append(f.float())
        logits.append(model.head(f).float())
    model.train(was)
    return torch.cat(feats), torch.cat(logits)


def predict_outputs(model: SourceModel, dataset, *, batch_size: int = 256,
                    device=None) -> tuple[np.ndarray, np.ndarray]:
    """``(features, logits)`` of ``dataset`` (its inputs only) in evaluation mode, as float32 arrays."""
    from ..train.data import make_source

    dev = next(model.parameters()).device if device is None else torch.device(device)
    if len(dataset) == 0:
        return (np.zeros((0, model.backbone.feature_dim), np.float32), np.zeros((0, model.num_classes), np.float32))
    f, z = _outputs(model, make_source(model, dataset), len(dataset), batch_size, dev)
    return f.cpu().numpy(), z.cpu().numpy()


# ---------------------------------------------------------------------------------- training
def _steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches the sampler yields per pass: a last batch of one sample is skipped (it breaks
    BatchNorm in training mode; SHOT's code skips it too)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def train_source_free(model: SourceModel, dataset, *, method: str = "shot", epochs: int = 30, batch_size: int = 64,
                      lr: float = 0.01, beta: float | None = None, n_neighbors: int | None = None,
                      alpha: float = AAD_ALPHA, alpha_decay: float = AAD_DECAY, seed: int = 0, device=None,
                      progress: bool = False, eval_batch_size: int = 256) -> dict:
    r"""Adapt ``model``'s backbone in place on the unlabeled ``dataset`` with ``method``.

    The loop is the one of SHOT's and AaD's code (see the module docstring for every setting):
    one shuffled pass over the pool per epoch in batches of ``batch_size``, the whole model in
    training mode but the frozen head, SGD on every backbone parameter at
    :math:`\mathrm{lr}\,(1 + 10\,t/T)^{-0.75}`. ``shot`` first relabels the whole pool in
    evaluation mode at every epoch (:func:`shot_pseudo_labels`), and minimises
    :func:`information_maximization` plus ``beta`` times the cross-entropy to those labels;
    ``shot_im`` the first term alone; ``aad`` fills its memory bank in one evaluation pass and
    then minimises :func:`aad_loss`, updating the bank with each batch. It is a plain loop, not
    the :class:`~transferkit.train.Trainer`: the Trainer's objective always includes the
    cross-entropy to the training split's labels, which an unlabeled pool does not have, and
    SHOT's labels change every epoch.

    Only ``dataset``'s inputs are read (``len`` and ``inputs``), never its labels.

    Parameters
    ----------
    model
        A :class:`SourceModel` (:func:`source_model`); its backbone is trained in place, its head
        never changes.
    dataset
        The unlabeled target pool (a :class:`~transferkit.data.DomainDataset`, at least 2 rows).
    method
        ``"shot"``, ``"shot_im"`` or ``"aad"``.
    epochs, batch_size, lr
        Passes over the pool, batch size and initial learning rate.
    beta
        SHOT's pseudo-label weight (``None``: 0.1 for ``shot``, 0 for ``shot_im``).
    n_neighbors, alpha, alpha_decay
        AaD's :math:`k` (``None``: 3), dispersion weight and the exponent of its decay.
    seed
        Batches, dropout and every other draw.
    device
        Where to train (``None``: the GPU when there is one).

    Returns
    -------
    dict
        ``history`` (per-epoch rows: ``train_loss``, ``entropy``, ``diversity``, ``pseudo_ce`` and
        ``pseudo_label_change`` (the share of the pool whose cluster label differs from the
        model's prediction) for SHOT, ``attract``/``disperse``/``alpha`` for AaD, ``lr``,
        ``epoch_time``), ``steps`` (:math:`T`), ``beta``, ``n_neighbors``.
    """
    from tqdm.auto import tqdm

    from ..nn.layout import to_channels_last
    from ..train.data import EpochSampler, make_source

    check_choice("method", method, METHODS)
    epochs = check_number("epochs", epochs, low=1, integer=True)
    batch_size = check_number("batch_size", batch_size, low=2, integer=True)
    check_number("lr", lr, low=0, low_inclusive=False)
    if method == "shot":
        beta = SHOT_BETA if beta is None else check_number("beta", beta, low=0)
    elif method == "shot_im":
        if beta not in (None, 0, 0.0):
            raise ConfigError(f"beta={beta!r} with method='shot_im': SHOT-IM is SHOT with beta=0; use method='shot' "
                              "for a pseudo-label weight.")
        beta = 0.0
    k = AAD_NEIGHBORS if n_neighbors is None else check_number("n_neighbors", n_neighbors, low=1, integer=True)
    n = len(dataset)
    if n < 2:
        raise DataError(f"source-free adaptation needs at least 2 unlabeled target samples, got {n}.")
    if method == "aad" and k >= n:
        raise ConfigError(f"n_neighbors={k} needs more than {k} target samples, got {n}; use fewer neighbours.")
    dev = _default_device(device)
    model.prepare(dev)
    model.head.requires_grad_(False)
    params = list(model.backbone.parameters())
    for p in params:
        p.requires_grad_(True)  # every backbone parameter adapts (SHOT's feature extractor + bottleneck)
    src = make_source(model, dataset)  # the inputs, preprocessed once when they fit in memory
    bs = min(batch_size, n)
    T = epochs * _steps_per_epoch(n, bs)
    opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    history: list[dict] = []
    step = 0
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # dropout; the batch order has its own generator
        gen = torch.Generator().manual_seed(seed)
        sampler = EpochSampler(n, bs, gen)
        fea_bank = score_bank = None
        if method == "aad":
            f0, z0 = _outputs(model, src, n, eval_batch_size, dev)
            fea_bank, score_bank = F.normalize(f0, dim=1), torch.softmax(z0, dim=1)
        for epoch in tqdm(range(epochs), desc=f"source_free:{method}", leave=False, disable=not progress):
            t0 = time.perf_counter()
            labels = None
            row: dict = {"epoch": epoch}
            if method == "shot" and beta > 0:
                f_all, z_all = _outputs(model, src, n, eval_batch_size, dev)
                pl = shot_pseudo_labels(f_all.cpu().numpy(), torch.softmax(z_all, 1).cpu().numpy())
                row["pseudo_label_change"] = float(np.mean(pl != z_all.argmax(1).cpu().numpy()))
                labels = torch.as_tensor(pl, device=dev)
            model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            for idx, xb in src.batches(sampler.epoch()):
                alpha_t = alpha * (1 + LR_GAMMA * step / T) ** (-alpha_decay)  # AaD: before the step count moves
                step += 1
                for g in opt.param_groups:  # SHOT's schedule, from the first step on
                    g["lr"] = lr * (1 + LR_GAMMA * step / T) ** (-LR_POWER)
                x = to_channels_last(model.move_inputs(xb, dev))
                f = model.features(x)
                z = model.head(f)
                if method == "aad":
                    p = torch.softmax(z, dim=1)
                    with torch.no_grad():
                        i = torch.as_tensor(idx, device=dev)
                        fn = F.normalize(f.detach().float(), dim=1)
                        fea_bank[i] = fn
                        score_bank[i] = p.detach().float()
                        near = _neighbours(fn, i, fea_bank, k)
                    out = aad_loss(p, score_bank[near], alpha_t)
                    out["alpha"] = torch.tensor(alpha_t)
                else:
                    out = information_maximization(z)
                    if labels is not None:
                        ce = F.cross_entropy(z, labels[torch.as_tensor(idx, device=dev)])
                        out["pseudo_ce"] = ce
                        out["loss"] = out["loss"] + beta * ce
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise DataError(f"source_free ({method}): the loss became {loss.item()} at epoch {epoch}, step "
                                    f"{step}; lower lr (e.g. lr: 0.001).")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for key, v in out.items():
                    name = "train_loss" if key == "loss" else key
                    sums[name] = sums.get(name, 0.0) + float(v.detach())
                n_batches += 1
            row.update({key: v / max(n_batches, 1) for key, v in sums.items()})
            row["lr"] = opt.param_groups[0]["lr"]
            row["epoch_time"] = time.perf_counter() - t0
            history.append(row)
    bad = next((nm for nm, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise DataError(f"source_free ({method}): weight {bad!r} became NaN or infinite; lower lr (e.g. lr: 0.001).")
    model.eval()
    return {"history": history, "steps": T, "beta": beta if method != "aad" else None,
            "n_neighbors": k if method == "aad" else None}
