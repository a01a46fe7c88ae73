"""Domains and datasets."""

from .arrays import load_npz
from .digits import load_digits_domain
from .domain import UNLABELED, DomainDataset, concat_datasets
from .folder import ImageFolderInputs, load_image_folder
from .idx import IdxImages, load_idx
from .multitask import digits_multitask, multi_fashion_mnist
from .real import (drug_review_conditions, load_animal_mnist, load_drug_reviews, load_fashion_mnist, load_fine_foods,
                   load_flavia)
from .spec import list_datasets, load_dataset, parse_spec
from .splits import sample_per_class, sample_prior_matched, stratified_split
from .tables import load_table
from .transforms import Shift

__all__ = [
    "DomainDataset",
    "digits_multitask",
    "multi_fashion_mnist",
    "concat_datasets",
    "IdxImages",
    "ImageFolderInputs",
    "Shift",
    "UNLABELED",
    "drug_review_conditions",
    "list_datasets",
    "load_dataset",
    "load_animal_mnist",
    "load_digits_domain",
    "load_drug_reviews",
    "load_fashion_mnist",
    "load_fine_foods",
    "load_flavia",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "load_table",
    "parse_spec",
    "sample_per_class",
    "sample_prior_matched",
    "stratified_split",
]
