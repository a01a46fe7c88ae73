"""Domains and datasets."""

from .digits import load_digits_domain
from .domain import UNLABELED, DomainDataset
from .splits import sample_per_class, stratified_split
from .transforms import Shift

__all__ = ["DomainDataset", "Shift", "UNLABELED", "load_digits_domain", "sample_per_class", "stratified_split"]
