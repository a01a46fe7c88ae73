"""Self-supervised pretext tasks: a backbone trained on unlabeled images (registry kind ``pretext``).

Each task is a :class:`transferkit.train.Objective`: the Trainer's model *is* the backbone being
pretrained (``ctx.model``), and the task's own parts (a rotation head, a projection MLP, a
predictor, BYOL's target network, a pixel decoder) are the objective's modules, trained (or
EMA-updated) beside it::

    bb = create_backbone("tiny_cnn", image_size=16, width=8, seed=0)
    task = make_pretext("simclr", bb, temperature=0.5)
    task.check_data(unlabeled)                      # one-line DataError when it cannot work
    groups = [{"params": list(bb.parameters()) + task.trainable_parameters(), "lr": 1e-3}]
    Trainer(bb, groups, objective=task, epochs=20).fit(unlabeled)

========== ===========================================================================
``rotation`` predict which of 0/90/180/270 degrees each image was rotated by (Gidaris 2018)
``simclr``   NT-Xent between two views through a projection MLP (Chen et al. 2020)
``byol``     online projector + predictor regress an EMA target network's projection (Grill 2020)
``simsiam``  the same without the EMA target: stop-gradient only (Chen & He 2021)
``mae``      masked-image modelling for CNNs: reconstruct zeroed patches from the features
========== ===========================================================================

**BatchNorm.** All views of a step go through ``ctx.model`` in *one* concatenated batch
(``[view1; view2]``, or the four rotations), so the backbone's BatchNorm normalizes every view
with the same batch statistics. A network cannot then tell the views apart by their batch
statistics, which is what SimCLR's global BN and BYOL's shared-batch forward aim at; the
running statistics are those of the mixed batch, which is what the pretrained backbone later
sees (augmented-like images). BYOL's target network gets the same concatenated batch.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import get, register
from .._validation import check_number, check_seed, suggest
from ..errors import ConfigError, DataError
from ..train.trainer import Objective, StepContext
from .contrastive import nt_xent
from .views import check_views_possible, make_views


def _encode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features ``(n, d)`` of ``x``: ``model.features`` for a model with a head, else ``model(x)``
    (a backbone)."""
    if hasattr(model, "features") and hasattr(model, "head"):
        f = model.features(x)
    else:
        f = model(x)
    if not isinstance(f, torch.Tensor) or f.ndim != 2:
        raise DataError(f"the pretrained model must return a (n, feature_dim) feature matrix, got "
                        f"{getattr(f, 'shape', type(f))}; give the Trainer the backbone itself.")
    return f


def _mlp(d_in: int, hidden: int, d_out: int, last_bn: bool = False) -> nn.Sequential:
    """``Linear -> BN -> ReLU -> Linear`` (SimCLR v2 / BYOL projector and predictor)."""
    layers = [nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
              nn.Linear(hidden, d_out, bias=not last_bn)]
    if last_bn:
        layers.append(nn.BatchNorm1d(d_out))
    return nn.Sequential(*layers)


def _int(name: str, value, low: int = 1, high: int = 65536) -> int:
    return check_number(name, value, low=low, high=high, integer=True)


class Pretext(Objective):
    """Base class of the self-supervised pretext tasks.

    Parameters
    ----------
    backbone
        The :class:`transferkit.backbones.Backbone` being pretrained. Only its
        ``feature_dim``, ``spec.input_size`` and normalization are read here (BYOL also copies
        it into its target network); it is *not* a submodule: the Trainer's model is the
        backbone and the task gets it as ``ctx.model`` at every step.
    **options
        The task's options (:attr:`defaults` lists them), and ``seed`` (default 0), from which
        the task's own layers are initialized (in a forked RNG, so the caller's random state
        neither matters nor moves); an unknown option is a :class:`ConfigError` naming the
        closest valid one.

    Attributes
    ----------
    needs_labels
        ``False``: every row trains, labeled or not (the labels are never read).
    uses_views
        Whether the task compares two augmented views (``check_data`` then also needs data
        these image transforms can augment).
    """

    needs_labels = False
    name: str = "pretext"
    uses_views: bool = True
    #: every option of the task and its default
    defaults: dict = {}

    def __init__(self, backbone: nn.Module, **options):
        super().__init__()
        spec = getattr(backbone, "spec", None)
        dim = getattr(backbone, "feature_dim", None)
        if spec is None or not isinstance(dim, int):
            raise ConfigError(f"pretext {self.name!r}: backbone={type(backbone).__name__} is not a transferkit "
                              "Backbone (with .spec and .feature_dim); create it with create_backbone(...).")
        if spec.modality != "image" or spec.input_size is None:
            raise ConfigError(f"pretext {self.name!r} pretrains image backbones; backbone {spec.name!r} is "
                              f"{spec.modality}; use an image backbone (e.g. tiny_cnn, efficientnet_lite0).")
        valid = [*self.defaults, "seed"]
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise ConfigError(f"pretext {self.name!r}: unknown option {unknown[0]!r}."
                              + suggest(str(unknown[0]), valid) + f" Options: {', '.join(valid)}.")
        self.feature_dim = int(dim)
        self.input_size = tuple(int(s) for s in spec.input_size)
        self.options = {**self.defaults, "seed": 0, **options}
        self.seed = check_seed("pretext seed", self.options["seed"])
        self.views = None
        if "views" in self.defaults and self.options["views"] is not None:
            self.views = make_views(self.options["views"], spec.mean, spec.std)
        # the task's own layers are drawn from ``seed`` in a forked RNG (as create_backbone(seed=...)):
        # the same options give the same task whatever the caller's global RNG went through
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._build(backbone, **{k: v for k, v in self.options.items() if k not in ("views", "seed")})

    def _build(self, backbone: nn.Module, **options) -> None:  # pragma: no cover - every task has one
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    def check_data(self, dataset) -> None:
        """Raise a one-line :class:`DataError` when ``dataset`` cannot train this task (see
        :func:`transferkit.pretrain.views.check_views_possible`)."""
        needs = "two augmented views of each image" if self.uses_views else self._needs
        check_views_possible(dataset, self.name, needs)

    _needs = "images"

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The task's own trained parameters (heads, projector, predictor; not BYOL's target),
        for the Trainer's ``param_groups`` beside the backbone's."""
        return [p for p in self.parameters() if p.requires_grad]

    def _view_pair(self, ctx: StepContext) -> torch.Tensor:
        """``[view1; view2]`` ``(2n, C, H, W)`` of ``ctx.inputs``, from ``ctx.generator``."""
        x = ctx.inputs
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise DataError(f"pretext {self.name!r} needs image batches (N, C, H, W), got "
                            f"{getattr(x, 'shape', type(x))}.")
        v1 = self.views(x, ctx.generator)
        v2 = self.views(x, ctx.generator)
        return torch.cat([v1, v2])


# ---------------------------------------------------------------------------- rotation
def rotate_batch(x: torch.Tensor, all_rotations: bool = True, gen: torch.Generator | None = None):
    """The rotated batch and its rotation labels (``k`` = ``k * 90`` degrees counter-clockwise,
    ``torch.rot90`` over the spatial dims).

    ``all_rotations``: every image four times, ``[rot0(x); rot90(x); rot180(x); rot270(x)]``
    with labels ``[0]*n + [1]*n + [2]*n + [3]*n`` (Gidaris et al.); else one rotation per image,
    ``k_i`` drawn uniformly from ``gen``.
    """
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"rotation needs square images (a 90-degree turn keeps the shape), got {tuple(x.shape[-2:])}.")
    n = x.shape[0]
    if all_rotations:
        xr = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
        y = torch.arange(4).repeat_interleave(n)
    else:
        y = torch.randint(0, 4, (n,), generator=gen)
        xr = torch.stack([torch.rot90(x[i], int(y[i]), dims=(1, 2)) for i in range(n)])
    return xr.contiguous(), y.to(x.device)


@register("pretext", "rotation")
class RotationPretext(Pretext):
    r"""Rotation prediction (RotNet): a linear head on the features classifies the rotation.

    Each image :math:`x` is rotated by :math:`k \cdot 90^\circ`, :math:`k \in \{0, 1, 2, 3\}`,
    and the loss is the cross-entropy :math:`-\log \mathrm{softmax}(W f(\mathrm{rot}_k x) + b)_k`
    averaged over images and rotations. Recognising how an object is turned needs knowing what
    it is, so the features learn shapes. Logged: ``rotation_accuracy`` (the dataset labels are
    not the rotation labels, so no ``logits`` are returned for the Trainer's accuracy).

    Options
    -------
    all_rotations : bool, default True
        All four rotations of each image in every batch (Gidaris et al.: better than one
        random rotation per image, at four times the compute); ``False``: one random each.
    views : str, dict or None, default None
        Augment before rotating (a view preset of :func:`~transferkit.pretrain.views.make_views`);
        ``None``: the images as they are, as in the paper.

    References
    ----------
    Gidaris, Singh & Komodakis, "Unsupervised representation learning by predicting image
    rotations", ICLR 2018.
    """

    name = "rotation"
    uses_views = False
    _needs = "square images it can rotate"
    defaults = {"all_rotations": True, "views": None}

    def _build(self, backbone, all_rotations=True):
        if not isinstance(all_rotations, bool):
            raise ConfigError(f"pretext 'rotation': all_rotations={all_rotations!r} is not a boolean; write true or "
                              "false.")
        if self.input_size[1] != self.input_size[2]:
            raise ConfigError(f"pretext 'rotation' needs a square input size (a 90-degree turn keeps the shape); "
                              f"backbone input is {self.input_size[1]}x{self.input_size[2]}; create it with "
                              "image_size=N.")
        self.all_rotations = all_rotations
        self.head = nn.Linear(self.feature_dim, 4)

    def forward(self, ctx: StepContext) -> dict:
        x = ctx.inputs
        if self.views is not None:
            x = self.views(x, ctx.generator)
        xr, y = rotate_batch(x, self.all_rotations, ctx.generator)
        logits = self.head(_encode(ctx.model, xr))
        loss = F.cross_entropy(logits, y)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss, "rotation_accuracy": acc}


# ---------------------------------------------------------------------------- simclr
@register("pretext", "simclr")
class SimCLRPretext(Pretext):
    r"""SimCLR: two random views of each image agree through a projection MLP, by NT-Xent.

    With views :math:`\tilde x_{2k-1}, \tilde x_{2k}` of image :math:`k`, features
    :math:`h = f(\tilde x)` (the backbone) and projections :math:`z = g(h)`
    (``Linear -> BN -> ReLU -> Linear``), the loss is NT-Xent
    (:func:`transferkit.pretrain.contrastive.nt_xent`)

    .. math:: \ell_{i,j} = -\log \frac{\exp(\cos(z_i, z_j)/\tau)}
              {\sum_{k \ne i} \exp(\cos(z_i, z_k)/\tau)}

    averaged over the :math:`2n` positive pairs; the other :math:`2n - 2` views of the batch are
    the negatives. The projection is thrown away after pretraining: the features before it
    transfer better (Chen et al., section 4.2). Logged: ``simclr_top1``, how often a view's
    nearest other view is its positive.

    Options
    -------
    temperature : float, default 0.5
        :math:`\tau`. The paper's best is 0.1 at batch 4096 with LARS and 0.5 for small batches
        (its appendix B.9 / Table 5: at batch 256, 0.5 beats 0.1); our batches are small.
    hidden_dim, projection_dim : int, default 256, 128
        Width of the projection MLP (2048 and 128 in the paper for ResNet-50).
    views : str or dict, default "ssl"
        The view preset (:func:`~transferkit.pretrain.views.make_views`).

    References
    ----------
    Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of visual
    representations", ICML 2020.
    """

    name = "simclr"
    defaults = {"temperature": 0.5, "hidden_dim": 256, "projection_dim": 128, "views": "ssl"}

    def _build(self, backbone, temperature=0.5, hidden_dim=256, projection_dim=128):
        self.temperature = float(check_number("temperature", temperature, low=1e-3, high=10.0))
        self.projector = _mlp(self.feature_dim, _int("hidden_dim", hidden_dim), _int("projection_dim", projection_dim))

    def forward(self, ctx: StepContext) -> dict:
        x2 = self._view_pair(ctx)
        n = x2.shape[0] // 2
        z = self.projector(_encode(ctx.model, x2))
        loss = nt_xent(z[:n], z[n:], self.temperature)
        with torch.no_grad():
            zn = F.normalize(z.detach(), dim=1)
            sim = (zn @ zn.T).fill_diagonal_(-2.0)
            pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
            top1 = (sim.argmax(1) == pos).float().mean()
        return {"loss": loss, "simclr_top1": top1}


# ---------------------------------------------------------------------------- byol
def byol_loss(p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    r"""BYOL's symmetrized loss :math:`\mathcal L + \tilde{\mathcal L}` with
    :math:`\mathcal L = \frac1n \sum_i 2 - 2 \cos(p_{1,i}, t_{2,i})` (and the views swapped):
    each view's online prediction regresses the *other* view's target projection. The targets
    are detached here too, so no gradient can reach them whatever the caller did."""
    t1, t2 = t1.detach(), t2.detach()
    return (2 - 2 * F.cosine_similarity(p1, t2, dim=1)).mean() + (2 - 2 * F.cosine_similarity(p2, t1, dim=1)).mean()


def byol_tau(base: float, progress: float) -> float:
    r"""BYOL's EMA rate :math:`\tau = 1 - (1 - \tau_{base}) (\cos(\pi p) + 1) / 2` at progress
    :math:`p \in [0, 1]`: :math:`\tau_{base}` at the start, 1 at the end."""
    p = min(max(float(progress), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * p) + 1.0) / 2.0


@register("pretext", "byol")
class BYOLPretext(Pretext):
    r"""BYOL: an online network predicts a slowly moving target network's view of the image.

    Online branch: backbone :math:`f_\theta` (``ctx.model``), projector :math:`g_\theta`,
    predictor :math:`q_\theta` (both ``Linear -> BN -> ReLU -> Linear``). Target branch: a copy
    :math:`f_\xi, g_\xi` of the backbone and projector, never trained by gradients
    (``requires_grad=False``, computed under ``no_grad``), but moved after every optimizer step
    (:meth:`after_optimizer_step`) by an exponential moving average

    .. math:: \xi \leftarrow \tau \xi + (1 - \tau) \theta, \qquad
              \tau = 1 - (1 - \tau_{base}) (\cos(\pi\, \mathrm{progress}) + 1) / 2

    (:func:`byol_tau`). The loss (:func:`byol_loss`) is
    :math:`\sum_{(a, b) \in \{(1, 2), (2, 1)\}} \frac1n \sum_i 2 - 2\cos(p_{a,i}, t_{b,i})` with
    :math:`p_a = q_\theta(g_\theta(f_\theta(v_a)))` and :math:`t_b = g_\xi(f_\xi(v_b))`, in [0, 8].
    No negatives: the predictor and the slow target keep it from collapsing.

    Build the task *after* the backbone's weights are final (the target starts as a copy of
    them). The target's BatchNorm layers use the batch's statistics, like the online ones.

    Options
    -------
    tau : float, default 0.99
        :math:`\tau_{base}` (0.996 in the paper for 1000 epochs at batch 4096; 0.99 for short
        runs, as solo-learn's CIFAR recipe).
    hidden_dim, projection_dim : int, default 256, 128
        Width of projector and predictor (4096 and 256 in the paper).
    views : str or dict, default "ssl"
        The view preset.

    References
    ----------
    Grill et al., "Bootstrap your own latent: a new approach to self-supervised learning",
    NeurIPS 2020.
    """

    name = "byol"
    defaults = {"tau": 0.99, "hidden_dim": 256, "projection_dim": 128, "views": "ssl"}

    def _build(self, backbone, tau=0.99, hidden_dim=256, projection_dim=128):
        self.base_tau = float(check_number("tau", tau, low=0.0, high=1.0))
        hidden, proj = _int("hidden_dim", hidden_dim), _int("projection_dim", projection_dim)
        self.projector = _mlp(self.feature_dim, hidden, proj)
        self.predictor = _mlp(proj, hidden, proj)
        self.target_encoder = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in [*self.target_encoder.parameters(), *self.target_projector.parameters()]:
            p.requires_grad_(False)
        # the online backbone, held outside the module tree (the Trainer owns and trains it; it is
        # not this objective's parameter) for the EMA step
        self.__dict__["_online"] = backbone
        self.tau_ = self.base_tau

    def _online_pairs(self):
        return [(self.target_encoder, self._online), (self.target_projector, self.projector)]

    def forward(self, ctx: StepContext) -> dict:
        model = ctx.model
        if model is not self._online and getattr(model, "backbone", None) is not self._online:
            raise ConfigError("pretext 'byol' was built for another backbone than the one the Trainer trains; "
                              "build it with the backbone you pass to the Trainer.")
        x2 = self._view_pair(ctx)
        n = x2.shape[0] // 2
        p = self.predictor(self.projector(_encode(model, x2)))
        with torch.no_grad():
            t = self.target_projector(_encode(self.target_encoder, x2))
        loss = byol_loss(p[:n], p[n:], t[:n], t[n:])
        return {"loss": loss, "byol_tau": torch.tensor(self.tau_)}

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """The EMA step of the target network at the schedule's ``tau`` for ``progress``."""
        tau = byol_tau(self.base_tau, progress)
        self.tau_ = tau
        for target, online in self._online_pairs():
            for t, o in zip(target.parameters(), online.parameters()):
                t.mul_(tau).add_(o.detach().to(t.dtype), alpha=1.0 - tau)


# ---------------------------------------------------------------------------- simsiam
def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    r"""SimSiam's symmetrized negative cosine with stop-gradient:
    :math:`\frac12 D(p_1, \mathrm{sg}(z_2)) + \frac12 D(p_2, \mathrm{sg}(z_1))`,
    :math:`D(p, z) = -\frac1n \sum_i \cos(p_i, z_i)`, in [-1, 1]. The stop-gradient (``detach``)
    is what keeps the Siamese network from collapsing to a constant (Chen & He, section 4.1)."""
    return -0.5 * (F.cosine_similarity(p1, z2.detach(), dim=1).mean()
                   + F.cosine_similarity(p2, z1.detach(), dim=1).mean())


@register("pretext", "simsiam")
class SimSiamPretext(Pretext):
    r"""SimSiam: BYOL without the target network; a stop-gradient alone prevents collapse.

    Both views go through the same backbone :math:`f` and projector :math:`g`
    (``Linear -> BN -> ReLU -> Linear -> BN``), giving :math:`z_1, z_2`; a bottleneck predictor
    :math:`h` (``Linear -> BN -> ReLU -> Linear``) gives :math:`p_a = h(z_a)`. The loss is
    :func:`simsiam_loss`: :math:`\frac12 D(p_1, \mathrm{sg}(z_2)) + \frac12 D(p_2, \mathrm{sg}(z_1))`.
    Logged: ``simsiam_z_std``, the mean per-dimension standard deviation of the normalized
    :math:`z` (the paper's collapse monitor: near :math:`1/\sqrt{d}` when healthy, 0 at collapse).

    Options
    -------
    projection_dim : int, default 256
        Width of the projector (2048 in the paper).
    predictor_hidden : int, default 64
        Bottleneck of the predictor (a quarter of ``projection_dim``, as the paper's 512 of 2048).
    views : str or dict, default "ssl"
        The view preset.

    References
    ----------
    Chen & He, "Exploring simple Siamese representation learning", CVPR 2021.
    """

    name = "simsiam"
    defaults = {"projection_dim": 256, "predictor_hidden": 64, "views": "ssl"}

    def _build(self, backbone, projection_dim=256, predictor_hidden=64):
        proj = _int("projection_dim", projection_dim)
        self.projector = _mlp(self.feature_dim, proj, proj, last_bn=True)
        self.predictor = _mlp(proj, _int("predictor_hidden", predictor_hidden), proj)

    def forward(self, ctx: StepContext) -> dict:
        x2 = self._view_pair(ctx)
        n = x2.shape[0] // 2
        z = self.projector(_encode(ctx.model, x2))
        p = self.predictor(z)
        loss = simsiam_loss(p[:n], p[n:], z[:n], z[n:])
        with torch.no_grad():
            z_std = F.normalize(z.detach(), dim=1).std(0).mean()
        return {"loss": loss, "simsiam_z_std": z_std}


# ---------------------------------------------------------------------------- masked image modelling
def patch_mask(n: int, side: int, patch: int, ratio: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """A ``(n, 1, side, side)`` float mask, 1 on the masked patches: in each image exactly
    ``round(ratio * g^2)`` of the ``g x g`` patches (``g = side // patch``), drawn from ``gen``."""
    g = side // patch
    k = int(round(ratio * g * g))
    order = torch.rand(n, g * g, generator=gen).argsort(1)
    m = torch.zeros(n, g * g).scatter_(1, order[:, :k], 1.0).view(n, 1, g, g)
    return m.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def masked_mse(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error over the masked pixels only,
    :math:`\sum_{i,c,u} m_{iu} (\hat x_{icu} - x_{icu})^2 / (C \sum_{i,u} m_{iu})`: what the
    visible pixels are reconstructed as does not count (MAE's loss, He et al. section 3)."""
    m = mask.expand_as(target)
    return ((reconstruction - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


@register("pretext", "mae")
class MaskedImagePretext(Pretext):
    r"""Masked-image modelling for CNNs: reconstruct zeroed patches from the pooled features.

    *Not* the ViT masked autoencoder of He et al.: a CNN cannot drop masked patches from its
    input, so (as SparK and ConvMAE do, much simplified) the masked patches are set to zero in
    the normalized input (the dataset's mean colour) and the whole image goes through the
    backbone. A light decoder (``Linear -> ReLU -> Linear``) maps the pooled feature vector
    :math:`f(x \odot (1 - m))` to all pixels :math:`\hat x` and the loss is the MSE on the
    masked patches only (:func:`masked_mse`):

    .. math:: \mathcal L = \frac{\sum m \odot (\hat x - x)^2}{C \sum m}

    With ``norm_pix`` each patch's target is normalized by its own mean and standard deviation
    (MAE's ``norm_pix_loss``). A global feature vector must then summarise where every stroke
    is: on small images (16-32 px) this learns the layout; on large ones a decoder from one
    vector is a weak signal (SparK decodes from the feature pyramid instead).

    Options
    -------
    mask_ratio : float, default 0.5
        Fraction of patches masked (0.75 in MAE's ViT; CNNs, which see the zeros, do better
        lower: SparK uses 0.6).
    patch_size : int or None, default None
        Patch side in pixels; ``None``: a quarter of the image side (a 4x4 grid of patches).
    decoder_hidden : int, default 256
        Width of the decoder.
    norm_pix : bool, default False
        Per-patch normalized targets.

    References
    ----------
    He et al., "Masked autoencoders are scalable vision learners", CVPR 2022. Tian et al.,
    "Designing BERT for convolutional networks: sparse and hierarchical masked modeling"
    (SparK), ICLR 2023. Gao et al., "ConvMAE: masked convolution meets masked autoencoders",
    NeurIPS 2022.
    """

    name = "mae"
    uses_views = False
    _needs = "images it can mask"
    defaults = {"mask_ratio": 0.5, "patch_size": None, "decoder_hidden": 256, "norm_pix": False}

    def _build(self, backbone, mask_ratio=0.5, patch_size=None, decoder_hidden=256, norm_pix=False):
        c, h, w = self.input_size
        if h != w:
            raise ConfigError(f"pretext 'mae' needs a square input size, backbone input is {h}x{w}; create it with "
                              "image_size=N.")
        self.mask_ratio = float(check_number("mask_ratio", mask_ratio, low=0.0, high=1.0, low_inclusive=False,
                                             high_inclusive=False))
        patch = max(h // 4, 1) if patch_size is None else _int("patch_size", patch_size, high=h)
        if h % patch:
            raise ConfigError(f"pretext 'mae': patch_size={patch} does not divide the image side {h}; use a divisor "
                              f"of {h} (e.g. {max(h // 4, 1)}).")
        if (h // patch) ** 2 < 2:
            raise ConfigError(f"pretext 'mae': patch_size={patch} leaves one patch on a {h}px image; use a smaller "
                              f"patch (e.g. {max(h // 4, 1)}).")
        if not isinstance(norm_pix, bool):
            raise ConfigError(f"pretext 'mae': norm_pix={norm_pix!r} is not a boolean; write true or false.")
        self.patch, self.norm_pix = patch, norm_pix
        hidden = _int("decoder_hidden", decoder_hidden)
        self.decoder = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, c * h * w))

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        if not self.norm_pix:
            return x
        n, c, h, w = x.shape
        p = self.patch
        t = x.reshape(n, c, h // p, p, w // p, p)
        mu = t.mean(dim=(1, 3, 5), keepdim=True)
        sd = t.var(dim=(1, 3, 5), keepdim=True, unbiased=False).add(1e-6).sqrt()
        return ((t - mu) / sd).reshape(n, c, h, w)

    def forward(self, ctx: StepContext) -> dict:
        x = ctx.inputs
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[-1] != x.shape[-2]:
            raise DataError(f"pretext 'mae' needs square image batches (N, C, H, W), got "
                            f"{getattr(x, 'shape', type(x))}.")
        n, c, h, w = x.shape
        mask = patch_mask(n, h, self.patch, self.mask_ratio, ctx.generator).to(dtype=x.dtype, device=x.device)
        rec = self.decoder(_encode(ctx.model, (x * (1 - mask)).contiguous())).view(n, c, h, w)
        loss = masked_mse(rec, self._target(x), mask)
        return {"loss": loss}


def make_pretext(name: str, backbone: nn.Module, **options) -> Pretext:
    """The registered pretext task ``name`` for ``backbone`` (an unknown name is a
    :class:`ConfigError` listing the valid ones)."""
    return get("pretext", name)(backbone, **options)


__all__ = ["BYOLPretext", "MaskedImagePretext", "Pretext", "RotationPretext", "SimCLRPretext", "SimSiamPretext",
           "byol_loss", "byol_tau", "make_pretext", "masked_mse", "patch_mask", "rotate_batch", "simsiam_loss"]
