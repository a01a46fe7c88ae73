"""Image folders: one subfolder per class, images read lazily with Pillow.

Layout::

    path/
      cat/  001.png  002.jpg  ...
      dog/  a.png    nested/b.png  ...

Class names are the subfolder names, sorted; the label of an image is the index of its class.
Every image file is checked once at load time (``PIL.Image.verify``, which reads headers and,
for PNG, the chunk checksums, without decoding pixels), so a corrupt file is reported up front
with its path instead of stopping training in the middle of an epoch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ._options import MAX_IMAGE_SIZE, check_n_classes, number, text
from .domain import DomainDataset

#: Most memory the decoded-image cache (``cache_size``) of one dataset may take.
MAX_CACHE_BYTES = 4 * 2**30

#: Most pixels one image file may declare; larger files are refused before they are decoded
#: (a 100,000 x 100,000 PNG of a few kilobytes would decode to 30 GB). Pillow's own limit
#: (``Image.MAX_IMAGE_PIXELS``, 89 M pixels) only warns below twice its value.
MAX_PIXELS = 89_478_485

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _normalize_extensions(extensions: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = extensions.replace(";", ",").split(",")
    exts = tuple(sorted({("." + e.strip().lstrip(".")).lower() for e in extensions if e.strip()}))
    if not exts:
        raise DataError("extensions is empty; give file endings such as ('.png', '.jpg').")
    return exts


def _resample():
    from PIL import Image

    # Image.Resampling exists from Pillow 9.1; older versions keep the constants on Image.
    return getattr(Image, "Resampling", Image).BILINEAR


class ImageFolderInputs(Sequence):
    """Lazy image inputs: file paths that are read, converted to RGB and resized on access.

    Parameters
    ----------
    root
        Folder the ``paths`` are relative to.
    paths
        Image files relative to ``root``, one per sample.
    size
        Every image is resized to ``size x size`` (bilinear, whole image, aspect ratio not kept).
    cache_size
        Number of decoded images kept in a least-recently-used cache; ``0`` (default) keeps none
        and relies on the operating system's file cache.

    Notes
    -----
    ``self[i]`` is a float32 array ``(size, size, 3)`` with values in [0, 1]. Integer indices
    (also negative) return one image; a slice or an index array returns a new
    :class:`ImageFolderInputs` over those files (see :meth:`subset`).
    """

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], size: int, cache_size: int = 0) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.size = int(size)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        if isinstance(i, (list, tuple, np.ndarray)):
            return self.subset(i)
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        if self.cache_size > 0 and i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i].copy()
        img = self._read(i)
        if self.cache_size > 0:
            self._cache[i] = img.copy()
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def _read(self, i: int) -> np.ndarray:
        from PIL import Image

        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((self.size, self.size), _resample())
                arr = np.asarray(im, dtype=np.float32)
        except FileNotFoundError:
            raise DataError(
                f"image file {str(path)!r} has disappeared since the folder was loaded; "
                "reload the dataset."
            ) from None
        except Exception as exc:  # Pillow raises many types for bad files
            raise DataError(
                f"cannot read image {str(path)!r} ({type(exc).__name__}: {exc}); "
                "replace or delete the file and reload."
            ) from None
        return arr / 255.0

    def subset(self, idx) -> ImageFolderInputs:
        """A new :class:`ImageFolderInputs` over the files at ``idx`` (no images are read)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return ImageFolderInputs(self.root, [self.paths[int(i)] for i in idx], self.size, self.cache_size)

    def fingerprint(self) -> str:
        """Hash of the relative paths, file sizes, modification times and the image size.

        Changes when a file is added, removed, renamed or rewritten, so cached features of an
        edited folder are not reused. It does not read the image contents.
        """
        h = hashlib.sha256(f"image-folder size={self.size}\n".encode())
        for rel in self.paths:
            try:
                st = (self.root / rel).stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{rel}\x00{stamp}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:20]

    def __repr__(self) -> str:
        return f"ImageFolderInputs(root={str(self.root)!r}, n={len(self)}, size={self.size})"


def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _images_under(folder: Path, exts: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, sorted, hidden entries skipped."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            (images if p.suffix.lower() in exts else others).append(p)
    return images, others


def load_image_folder(
    path: str | os.PathLike,
    size: int = 64,
    name: str | None = None,
    extensions: Iterable[str] | str = IMAGE_EXTENSIONS,
    cache_size: int = 0,
) -> DomainDataset:
    """Load a folder with one subfolder of images per class as an image :class:`DomainDataset`.

    Parameters
    ----------
    path
        The root folder. Each non-hidden subfolder is a class (names sorted, label = index);
        images may sit in nested folders below a class folder. Hidden files and folders
        (names starting with ``.``) are skipped.
    size
        Images are converted to RGB and the whole image is resized to ``size x size``
        (bilinear; the aspect ratio is not kept and nothing is cropped).
    name
        Domain name; defaults to the folder's name.
    extensions
        File endings counted as images (case-insensitive).
    cache_size
        Decoded images kept in memory per dataset (LRU); ``0`` keeps none.

    Returns
    -------
    DomainDataset
        ``modality="image"``; ``inputs`` is a lazy :class:`ImageFolderInputs` whose items are
        float32 arrays ``(size, size, 3)`` in [0, 1]; ``labels`` int64 ``(n,)``.

    Raises
    ------
    DataError
        The folder is missing or not a folder, has no class subfolders or no images, a class
        folder holds no images, or an image file is unreadable (the message names the file).
    """
    what = f"image folder {str(path)!r}"
    size = number(what, "size", size, low=1, high=MAX_IMAGE_SIZE, integer=True,
                  hint="the side images are resized to, in pixels, e.g. size=64")
    cache_size = number(what, "cache_size", cache_size, low=0, integer=True,
                        hint="the number of decoded images kept in memory; 0 keeps none")
    name = text(what, "name", name)
    exts = _normalize_extensions(extensions)
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"image folder {str(path)!r} does not exist (looked at {str(root.absolute())!r}); "
            "check the path, or create it with one subfolder of images per class."
        )
    if not root.is_dir():
        raise DataError(
            f"{str(path)!r} is a file, not a folder (expected a folder): an image dataset is a folder with one "
            "subfolder of images per class (e.g. data/cat/*.png, data/dog/*.png)."
        )
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not _is_hidden(d)), key=lambda d: d.name)
    if not class_dirs:
        loose, _ = _images_under(root, exts)
        hint = (
            f" It holds {len(loose)} image(s) directly; move them into one subfolder per class."
            if loose
            else " It holds no images at all."
        )
        raise DataError(
            f"image folder {str(path)!r} has no class subfolders; put each class's images in its "
            f"own subfolder (e.g. {str(path)}/cat/1.png, {str(path)}/dog/2.png).{hint}"
        )
    classes = [d.name for d in class_dirs]
    check_n_classes(what, len(classes), source=f"its {len(classes):,} class subfolders")
    if len(classes) == 1:
        raise DataError(
            f"image folder {str(path)!r} has 1 class subfolder ({classes[0]!r}); found 1 class, classification "
            "needs at least 2: add a subfolder of images for each other class (e.g. "
            f"{str(path)}/{classes[0]}/*.png and {str(path)}/other/*.png)."
        )
    rel_paths: list[str] = []
    labels: list[int] = []
    empty: list[tuple[str, list[Path]]] = []
    for k, d in enumerate(class_dirs):
        images, others = _images_under(d, exts)
        if not images:
            empty.append((d.name, others))
            continue
        rel_paths.extend(p.relative_to(root).as_posix() for p in images)
        labels.extend([k] * len(images))
    if not rel_paths:
        raise DataError(
            f"image folder {str(path)!r} contains no images in any of its {len(classes)} class "
            f"subfolder(s) ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); "
            f"image files end in {', '.join(exts)}."
        )
    if empty:
        cname, others = empty[0]
        found = (
            f"it holds {len(others)} other file(s), e.g. {others[0].name!r}"
            if others
            else "it is empty"
        )
        more = f" (also empty: {', '.join(repr(c) for c, _ in empty[1:])})" if len(empty) > 1 else ""
        raise DataError(
            f"image folder {str(path)!r}: class folder {cname!r} has no images ({found}){more}; "
            f"add images ending in {', '.join(exts)} or remove the folder."
        )
    per_image = size * size * 3 * 4
    if min(cache_size, len(rel_paths)) * per_image > MAX_CACHE_BYTES:
        raise ConfigError(
            f"{what}: cache_size={cache_size} would keep up to {min(cache_size, len(rel_paths)):,} decoded "
            f"{size}x{size} images ({min(cache_size, len(rel_paths)) * per_image / 2**30:.1f} GiB) in memory, "
            f"more than {MAX_CACHE_BYTES / 2**30:g} GiB; lower cache_size (at most "
            f"{MAX_CACHE_BYTES // per_image:,} at size={size}) or use 0 to rely on the file cache."
        )
    _verify_images(root, rel_paths)
    inputs = ImageFolderInputs(root, rel_paths, size, cache_size)
    return DomainDataset(
        inputs=inputs,
        labels=np.asarray(labels, dtype=np.int64),
        name=name or root.resolve().name,
        modality="image",
        classes=classes,
        meta={"kind": "folder", "path": str(root), "size": size},
    )


def _verify_images(root: Path, rel_paths: Sequence[str]) -> None:
    """Check every file cheaply with ``Image.verify`` and report all bad files at once."""
    from PIL import Image

    bad: list[tuple[str, str]] = []
    for rel in rel_paths:
        p = root / rel
        try:
            with warnings.catch_warnings():
                # Pillow warns (once, on stderr) between MAX_IMAGE_PIXELS and twice that, and
                # raises DecompressionBombError above: both become the one error below.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    w, h = im.size
                    if w * h > MAX_PIXELS:
                        raise Image.DecompressionBombError(f"{w}x{h} pixels")
                    im.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"image {str(p)!r} is too large to decode safely ({str(exc).strip()}; the limit is "
                f"{MAX_PIXELS:,} pixels, a possible decompression bomb); downscale it (e.g. to 4096x4096) "
                "or delete it, then load the folder again."
            ) from None
        except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError, ...
            bad.append((str(p), f"{type(exc).__name__}: {exc}"))
    if bad:
        first, why = bad[0]
        more = f" and {len(bad) - 1} more: {', '.join(repr(b) for b, _ in bad[1:4])}" if len(bad) > 1 else ""
        raise DataError(
            f"unreadable or corrupt image {first!r} ({why}){more}; replace or delete the "
            "file(s) and load the folder again."
        )
