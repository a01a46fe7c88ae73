"""Template captions for image datasets that ship with class names but no descriptions.

Fashion-MNIST and Animal-MNIST come with a label per image and nothing else. To train an
image-text embedding on them (:mod:`transferkit.pretrain.image_text`) each image gets a caption
**built from a template, its class name and a small hand-written attribute table**:
``"a photo of a sneaker."``, ``"a black and white photo of a sneaker."``, ``"a sporty
sneaker."``, ``"a sneaker, a kind of footwear."``. These captions are *templates, not human
descriptions*: every image of a class gets one of the same few sentences, whatever it shows
(a sneaker's caption never says it is white or seen from the side), so a caption carries the
class name, a generic attribute of the class and nothing about the image itself. Retrieval
scores on them measure how well images and class-level sentences align, not how well a model
would match free-form human captions.

Templates are Python format strings with the fields ``{name}`` (the class name, lower-cased),
``{attribute}`` (one of the class's attributes) and ``{kind}`` (what sort of thing the class
is); ``"{}"`` is accepted for the name, as in
:func:`transferkit.features.label_embeddings.class_name_embeddings`. A template that needs an
attribute or a kind is skipped for a class the tables do not describe. ``"a"`` before a word
that starts with a vowel becomes ``"an"``.

The templates are in the style of CLIP's prompt ensemble (Radford et al. 2021, "Learning
transferable visual models from natural language supervision", appendix: "a photo of a {}.",
"a black and white photo of a {}.", "a low resolution photo of a {}."), and the attribute
tables play the part of the class attributes of zero-shot benchmarks (Lampert et al. 2009).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from .._validation import check_seed
from ..errors import DataError

__all__ = [
    "ANIMAL_MNIST_ATTRIBUTES", "ANIMAL_MNIST_TEMPLATES", "CAPTION_TEMPLATES", "CLASS_TABLES",
    "FASHION_MNIST_ATTRIBUTES", "FASHION_MNIST_TEMPLATES", "PROMPT_TEMPLATES", "captions_for", "check_class_names",
    "class_prompts", "fill_template",
]

#: Prompts that need only the class name: the default for zero-shot classification, where the
#: classes to recognise may be ones no attribute table describes.
PROMPT_TEMPLATES = (
    "a photo of a {name}.",
    "a black and white photo of a {name}.",
    "a low resolution photo of a {name}.",
    "a photo of the {name}.",
)

#: Caption templates for training: the name-only prompts plus attribute and kind templates.
CAPTION_TEMPLATES = PROMPT_TEMPLATES + (
    "a {attribute} {name}.",
    "a photo of a {attribute} {name}.",
    "a {name}, a kind of {kind}.",
)

#: Fashion-MNIST: 28x28 grayscale product photos on a black background.
FASHION_MNIST_TEMPLATES = CAPTION_TEMPLATES + ("a grayscale product photo of a {name}.",)

#: Animal-MNIST: white animal silhouettes on black.
ANIMAL_MNIST_TEMPLATES = CAPTION_TEMPLATES + ("a silhouette of a {name}.",
                                              "a white silhouette of a {attribute} {name}.")

#: Hand-written attributes of the Fashion-MNIST classes: ``name -> (kind, (attribute, ...))``.
FASHION_MNIST_ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T-shirt/top": ("clothing", ("short-sleeved", "casual")),
    "Trouser": ("clothing", ("long-legged", "full-length")),
    "Pullover": ("clothing", ("long-sleeved", "knitted")),
    "Dress": ("clothing", ("one-piece", "knee-length")),
    "Coat": ("outerwear", ("warm", "long-sleeved")),
    "Sandal": ("footwear", ("open-toed", "strappy")),
    "Shirt": ("clothing", ("collared", "buttoned")),
    "Sneaker": ("footwear", ("sporty", "low-top")),
    "Bag": ("accessory", ("handheld", "carry-all")),
    "Ankle boot": ("footwear", ("heeled", "leather")),
}

#: Hand-written attributes of the Animal-MNIST classes: ``name -> (kind, (attribute, ...))``.
ANIMAL_MNIST_ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Bear": ("mammal", ("furry", "heavy")),
    "Bird": ("bird", ("winged", "feathered")),
    "Cat": ("pet", ("whiskered", "small")),
    "Cow": ("farm animal", ("horned", "grazing")),
    "Dog": ("pet", ("four-legged", "loyal")),
    "Elephant": ("mammal", ("trunked", "big-eared")),
    "Giraffe": ("mammal", ("long-necked", "spotted")),
    "Horse": ("farm animal", ("hoofed", "maned")),
    "Sheep": ("farm animal", ("woolly", "grazing")),
    "Zebra": ("mammal", ("striped", "hoofed")),
}

#: Per dataset kind (``DomainDataset.meta["kind"]``): ``(attribute table, caption templates)``.
CLASS_TABLES: dict[str, tuple[dict, tuple[str, ...]]] = {
    "fashion_mnist": (FASHION_MNIST_ATTRIBUTES, FASHION_MNIST_TEMPLATES),
    "animal_mnist": (ANIMAL_MNIST_ATTRIBUTES, ANIMAL_MNIST_TEMPLATES),
}

_FIELDS = ("name", "attribute", "kind")
# "an" before a vowel sound; "a one-piece", "a unique" keep "a"
_AN = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])(?!one|uni|use|eu)")


def check_class_names(names, what: str = "class_names") -> list[str]:
    """The class names as a list of strings, or a one-line :class:`DataError`.

    Refused: no list, an empty list, an empty or non-string name, two classes with one name,
    and names that are only numbers (``"0"``, ``"1"``, ...: an index says nothing about what
    the class is, and a caption or a prompt built from it would be noise). The first checks are
    those of :func:`transferkit.features.label_embeddings.class_name_embeddings`.
    """
    if names is None:
        raise DataError(f"{what} is missing; captions and prompts are built from class names: give them "
                        "(classes=[...] on the dataset, or class_names=[...]).")
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise DataError(f"{what} must be a list of class names, got {type(names).__name__}; for one class pass [name].")
    from ..features.label_embeddings import _names  # the one check of a list of class names

    try:
        names = _names(list(names), None)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    if all(n.strip().isdigit() for n in names):
        raise DataError(f"{what} names the classes only by numbers ({', '.join(names[:5])}"
                        f"{' ...' if len(names) > 5 else ''}); captions need words for them: give the class names.")
    return names


def _check_templates(templates, what: str = "templates") -> tuple[str, ...]:
    if isinstance(templates, str) or not hasattr(templates, "__iter__"):
        raise DataError(f"{what} must be a list of template strings such as ['a photo of a {{name}}.'], "
                        f"got {type(templates).__name__}.")
    out = tuple(templates)
    if not out:
        raise DataError(f"{what} is empty; give at least one template such as 'a photo of a {{name}}.'.")
    for t in out:
        if not isinstance(t, str):
            raise DataError(f"{what}: {t!r} is not a string; a template is a string such as 'a photo of a {{name}}.'.")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
        except ValueError as exc:
            raise DataError(f"{what}: {t!r} is not a valid format string ({exc}); write fields as {{name}}.") from None
        bad = [f for f in fields if f not in (*_FIELDS, "")]
        if bad or not any(f in ("name", "") for f in fields):
            raise DataError(f"{what}: {t!r} must contain {{name}} (or {{}}) and no field other than {{name}}, "
                            f"{{attribute}}, {{kind}}" + (f" (found {{{bad[0]}}})" if bad else "") + ".")
    return out


def _lookup(table: Mapping | None, name: str) -> tuple[str | None, tuple[str, ...]]:
    if not table:
        return None, ()
    entry = table.get(name)
    if entry is None:  # the tables are keyed by the datasets' spelling; look the name up case-blind
        entry = {k.lower(): v for k, v in table.items()}.get(name.lower())
    if entry is None:
        return None, ()
    kind, attrs = entry
    return kind, tuple(attrs)


def _default_table(names: Sequence[str]) -> dict:
    """The built-in tables' entries for these names (any dataset's), case-blind."""
    merged = {}
    for table, _ in CLASS_TABLES.values():
        merged.update(table)
    return {n: v for n, v in merged.items() if n.lower() in {m.lower() for m in names}}


def fill_template(template: str, name: str, attribute: str | None = None, kind: str | None = None) -> str:
    """``template`` with the class name (lower-cased), attribute and kind filled in; ``"a"``
    before a vowel becomes ``"an"``. A field the template needs but that is ``None`` is a
    :class:`DataError`."""
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if ("attribute" in fields and attribute is None) or ("kind" in fields and kind is None):
        raise DataError(f"template {template!r} needs an attribute and a kind of class {name!r}, which has none; "
                        "give attributes={name: (kind, (attribute, ...))} or drop the template.")
    text = template.format(name.lower(), name=name.lower(), attribute=attribute, kind=kind)
    return _AN.sub(lambda m: m.group(1) + "n ", text)


def _expand(template: str, name: str, kind: str | None, attrs: tuple[str, ...]) -> list[str]:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if ("kind" in fields and kind is None) or ("attribute" in fields and not attrs):
        return []
    if "attribute" in fields:
        return [fill_template(template, name, a, kind) for a in attrs]
    return [fill_template(template, name, None, kind)]


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES,
                  attributes: Mapping[str, tuple] | None = None) -> list[list[str]]:
    """Every prompt of every class: ``prompts[k]`` lists class ``k``'s sentences.

    Parameters
    ----------
    class_names
        The class names, in class-index order.
    templates
        Format strings with ``{name}`` and optionally ``{attribute}`` and ``{kind}`` (see the
        module notes). A template with ``{attribute}`` gives one prompt per attribute of the
        class; one that needs an attribute or kind the class does not have is skipped for it.
    attributes
        ``name -> (kind, (attribute, ...))``; ``None``: the built-in Fashion-MNIST and
        Animal-MNIST tables (:data:`FASHION_MNIST_ATTRIBUTES`, :data:`ANIMAL_MNIST_ATTRIBUTES`),
        looked up case-blind; ``{}``: no attributes (only name templates are used).

    Returns
    -------
    list of lists of str
        One non-empty list of distinct prompts per class.

    Raises
    ------
    DataError
        Missing, numeric or duplicate class names, a bad template, or a class none of whose
        templates applies.
    """
    names = check_class_names(class_names)
    templates = _check_templates(templates)
    table = _default_table(names) if attributes is None else attributes
    if not isinstance(table, Mapping):
        raise DataError(f"attributes must be a mapping name -> (kind, (attribute, ...)), got {type(table).__name__}.")
    out = []
    for name in names:
        kind, attrs = _lookup(table, name)
        prompts = list(dict.fromkeys(p for t in templates for p in _expand(t, name, kind, attrs)))
        if not prompts:
            raise DataError(f"class {name!r}: every template needs an attribute or kind it does not have; add a "
                            "template with only {name}, such as 'a photo of a {name}.'.")
        out.append(prompts)
    return out


def captions_for(dataset, seed: int = 0, templates: Sequence[str] | None = None,
                 attributes: Mapping[str, tuple] | None = None) -> list[str]:
    """One template caption per row of a labeled dataset (see the module notes: templates, not
    human descriptions).

    Row ``i`` of class ``y_i`` gets one of the prompts of :func:`class_prompts` for its class,
    drawn uniformly with ``numpy.random.default_rng(seed)`` (one draw per row, in row order), so
    a seed gives the same captions on every run.

    Parameters
    ----------
    dataset
        A :class:`~transferkit.data.DomainDataset` with class names (``classes``) and a label
        on every row.
    seed
        Seed of the per-row template choice.
    templates
        ``None``: the dataset's own templates when ``dataset.meta["kind"]`` is
        ``fashion_mnist`` or ``animal_mnist`` (:data:`FASHION_MNIST_TEMPLATES`,
        :data:`ANIMAL_MNIST_TEMPLATES`), else :data:`CAPTION_TEMPLATES`.
    attributes
        As for :func:`class_prompts` (``None``: the dataset's table, else the built-in tables).

    Returns
    -------
    list of str
        ``len(dataset)`` captions.

    Raises
    ------
    DataError
        Missing or numeric class names, a row without a label, a bad template.
    """
    what = getattr(dataset, "name", "the dataset")
    if not hasattr(dataset, "labels") or not hasattr(dataset, "classes"):
        raise DataError(f"captions_for takes a DomainDataset with labels and class names, got "
                        f"{type(dataset).__name__}.")
    if not dataset.classes:
        raise DataError(f"dataset {what!r} has no class names; template captions are built from them: give them "
                        "(classes=[...]), or pass your own captions.")
    names = check_class_names(dataset.classes, f"dataset {what!r} class names")
    y = dataset.labels
    if y is None or len(y) and (np.asarray(y) < 0).any():
        n_bad = len(dataset) if y is None else int((np.asarray(y) < 0).sum())
        raise DataError(f"dataset {what!r}: {n_bad} row(s) have no label, so no class caption; pass captions=[...] "
                        "for them or drop the unlabeled rows.")
    kind = (dataset.meta or {}).get("kind")
    table, own = CLASS_TABLES.get(kind, (None, CAPTION_TEMPLATES))
    prompts = class_prompts(names, own if templates is None else templates,
                            attributes if attributes is not None else table)
    rng = np.random.default_rng(check_seed("seed", seed))
    u = rng.random(len(y))
    return [prompts[c][int(r * len(prompts[c]))] for c, r in zip(np.asarray(y), u)]
