"""Deep domain-adaptation losses (registry kind ``da_loss``).

Each loss is an :class:`torch.nn.Module` called as
``loss(f_s, f_t, logits_s=None, logits_t=None, y_s=None)`` that returns a dict whose ``"loss"``
is the weighted term to add to the classification loss; see :class:`DALoss`.

=============  ===========================  ============================================
key            class                        idea
=============  ===========================  ============================================
``dan``        :class:`DANLoss`             multi-kernel MMD (Long et al., 2015)
``jan``        :class:`JANLoss`             joint MMD of features and predictions (2017)
``dann``       :class:`DANNLoss`            discriminator + gradient reversal (Ganin, 2016)
``cdan``       :class:`CDANLoss`            conditional adversarial, f x g (Long, 2018)
``cdan_e``     :class:`CDANELoss`           CDAN with entropy conditioning
``deep_coral`` :class:`DeepCORALLoss`       covariance alignment (Sun & Saenko, 2016)
``mcc``        :class:`MCCLoss`             minimum class confusion (Jin et al., 2020)
``entropy``    :class:`EntropyLoss`         entropy minimisation (Grandvalet & Bengio, 2005)
``deepjdot``   :class:`DeepJDOTLoss`        joint OT on features and labels (Damodaran, 2018)
``kl_align``   :class:`KLAlignLoss`         KL between Gaussian fits of the features
``pada``       :class:`PADALoss`            partial DA: class-weighted DANN (Cao, 2018)
``ba3us``      :class:`BA3USLoss`           partial DA: balanced alignment + complement
                                            entropy (Liang et al., 2020)
=============  ===========================  ============================================

``pada`` and ``ba3us`` are for *partial* domain adaptation (the target's classes a subset of
the source's): both weight source classes by the target's average prediction and also
reweight the source cross-entropy (the term adds the correction to the Trainer's plain mean).
"""

from ._adversarial import AdversarialLoss, DomainDiscriminator
from ._base import DALoss, logit_entropy
from .ba3us import BA3USLoss, ba3us_augment_size, ba3us_domain_loss, complement_entropy, complement_entropy_loss
from .cdan import CDANELoss, CDANLoss, cdan_entropy_weights
from .dan import DANLoss, mmd_from_kernels
from .dann import DANNLoss
from .deep_coral import DeepCORALLoss, batch_covariance
from .deepjdot import DeepJDOTLoss
from .entropy import EntropyLoss
from .jan import JANLoss
from .kl_align import KLAlignLoss, gaussian_kl
from .mcc import MCCLoss
from .pada import ClassWeightRefresh, PADALoss, pada_class_weights, weighted_ce_correction, weighted_domain_bce

__all__ = [
    "AdversarialLoss",
    "BA3USLoss",
    "CDANELoss",
    "ClassWeightRefresh",
    "CDANLoss",
    "DALoss",
    "DANLoss",
    "DANNLoss",
    "DeepCORALLoss",
    "DeepJDOTLoss",
    "DomainDiscriminator",
    "EntropyLoss",
    "JANLoss",
    "KLAlignLoss",
    "MCCLoss",
    "PADALoss",
    "ba3us_augment_size",
    "ba3us_domain_loss",
    "batch_covariance",
    "cdan_entropy_weights",
    "complement_entropy",
    "complement_entropy_loss",
    "gaussian_kl",
    "mmd_from_kernels",
    "logit_entropy",
    "pada_class_weights",
    "weighted_ce_correction",
    "weighted_domain_bce",
]
