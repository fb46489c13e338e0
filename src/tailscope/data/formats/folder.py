"""Image folders (``folder:DIR``): one sub-directory per class, read with Pillow."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError, Dataset, stratified_split

__all__ = ["IMAGE_EXTENSIONS", "load_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: Pillow decoders allowed; formats that shell out (EPS via Ghostscript) or are rarely safe are not.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "F"}  # more than 8 bits: scaled to 0..255 by one dataset-wide top


def _class_dirs(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _files(d: Path) -> tuple[list[Path], int, list[Path]]:
    """A class folder's image files, the count of other files, and its sub-folders (not read)."""
    files, skipped, nested = [], 0, []
    for p in sorted(d.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            nested.append(p)
        elif not p.is_file():
            continue
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
        else:
            skipped += 1
    return files, skipped, nested


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path, formats=_PIL_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {path} ({e}); remove the file or convert it to PNG/JPEG.") from None


def _deep_tops(paths: list[Path]) -> dict[str, float]:
    """The white level of the folder's 16-bit, 32-bit and float images, one for each kind.

    16-bit: 65535, the format's white. 32-bit integers and floats: the folder's largest
    value (at least 1), since they have no fixed white (12-bit camera data stored as 32-bit
    would otherwise keep 16 grey levels). One level for the whole folder keeps brightness
    comparable between images (each image's own maximum would make every image's
    brightest pixel white).
    """
    tops = {"i16": 65535.0, "int": 1.0, "float": 1.0}
    for p in paths:  # (32-bit and float images only)
        with _open(p) as im:
            kind = _deep_kind(im)
            tops[kind] = max(tops[kind], float(np.nanmax(np.asarray(im, dtype=np.float64), initial=0.0)))
    return tops


def _deep_kind(im) -> str:
    """"i16", "int" (32-bit) or "float": Pillow before 10.3 opens 16-bit PNGs as mode "I",
    and a PNG cannot hold 32-bit integers, so a PNG in mode "I" is 16-bit."""
    if im.mode == "F":
        return "float"
    return "i16" if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG") else "int"


def _read(path: Path, mode: str, size: tuple[int, int] | None, tops: dict[str, float]) -> np.ndarray:
    from PIL import Image

    with _open(path) as im:
        try:
            if im.mode in _DEEP_MODES:
                # to 8-bit grey first: Pillow's own conversion of these modes clips at 255
                arr = np.asarray(im, dtype=np.float64)
                top = tops[_deep_kind(im)]
                im = Image.fromarray(np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
                im = im.convert(mode)
            elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert(mode)  # drop alpha (pixels keep their colour)
            else:
                im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path} ({e}); the file is truncated or corrupt.") from None


def load_folder(path: str, *, size: tuple[int, int] | None = None, mode: str | None = None,
                test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """``folder:DIR``: images sorted into one folder per class.

    Parameters
    ----------
    path : str
        Either ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` (the given split), or
        ``DIR/<class>/*`` (then a seeded stratified split with ``test_fraction`` and
        ``split_seed``). Class names are the folder names, sorted. Files without an image
        extension (``.png``, ``.jpg``, ...) and hidden files are skipped; their count is in
        ``meta["skipped_files"]``. Folders inside class folders are not read (a warning
        names them; their count is ``meta["skipped_folders"]``). Images of more than 8
        bits become 8-bit with one white level for the whole folder: 65535 for 16-bit, and
        the largest value found (at least 1) for 32-bit integers and floats.
    size : (H, W), optional
        Resize every image to this size (bilinear). Default: all images must already have
        the same size, otherwise a DataError names two that differ.
    mode : {"L", "RGB"}, optional
        Convert to grey (``L``, arrays ``(N, H, W)``) or colour (``RGB``, ``(N, H, W, 3)``).
        Default: ``L`` if every image is grey, else ``RGB``.

    Returns
    -------
    Dataset
        uint8 images; ``meta["files"]`` lists each example's file relative to DIR.
    """
    d = Path(path).expanduser()
    if not d.is_dir():
        raise DataError(f"image folder {d} does not exist; pass folder:DIR with DIR/<class>/*.png "
                        "(or DIR/train/<class>/ and DIR/test/<class>/).")
    if mode not in (None, "L", "RGB"):
        raise DataError(f"mode must be 'L' (grey), 'RGB' or None (automatic), got {mode!r}.")
    if size is not None:
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)):
            raise DataError(f"size must be (height, width) in pixels, got {size!r}.")
        size = (int(size[0]), int(size[1]))
    split_given = (d / "train").is_dir() and (d / "test").is_dir()
    roots = {"train": d / "train", "test": d / "test"} if split_given else {"all": d}
    classes = [p.name for p in _class_dirs(roots["train" if split_given else "all"])]
    if len(classes) < 2:
        raise DataError(f"{roots['train' if split_given else 'all']} has {len(classes)} class folders; "
                        "put each class's images in its own sub-folder (at least 2 classes).")
    if split_given:
        extra = sorted({p.name for p in _class_dirs(roots["test"])} - set(classes))
        if extra:
            raise DataError(f"{roots['test']} has class folders {extra} that {roots['train']} lacks; "
                            "train and test must use the same class folders.")
    listing: dict[str, tuple[list[Path], list[int]]] = {}
    skipped, nested = 0, []
    for split, root in roots.items():
        paths, labels = [], []
        for c, cname in enumerate(classes):
            if not (root / cname).is_dir():
                continue
            files, skip, sub = _files(root / cname)
            skipped += skip
            nested += sub
            if not files and split != "test":
                raise DataError(f"class folder {root / cname} holds no images (extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder.")
            paths += files
            labels += [c] * len(files)
        if not paths:
            raise DataError(f"{root} holds no images.")
        listing[split] = (paths, labels)

    if nested:
        warnings.warn(f"{len(nested)} folder(s) inside class folders were not read (e.g. {nested[0].relative_to(d)}): "
                      "a class's images must sit directly in its folder; move them up, or into a class "
                      "folder of their own.", stacklevel=3)
    # First pass: headers only (no decoding) to fix the mode and check sizes.
    all_paths = [p for paths, _ in listing.values() for p in paths]
    sizes, grey, deep = {}, True, []
    for p in all_paths:
        with _open(p) as im:
            sizes.setdefault(im.size, p)
            grey = grey and im.mode in _GREY_MODES
            if im.mode in _DEEP_MODES and _deep_kind(im) != "i16":  # (16-bit white is fixed: nothing to measure)
                deep.append(p)
    tops = _deep_tops(deep)
    if size is None and len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(f"images differ in size: {p1} is {s1[1]}x{s1[0]} but {p2} is {s2[1]}x{s2[0]} "
                        "(height x width); pass size=(H, W) to resize them all.")
    out_mode = mode or ("L" if grey else "RGB")
    h, w = size if size is not None else next(iter(sizes))[::-1]
    shape = (h, w) if out_mode == "L" else (h, w, 3)

    arrays = {}
    for split, (paths, labels) in listing.items():
        x = np.empty((len(paths), *shape), dtype=np.uint8)
        for i, p in enumerate(paths):
            x[i] = _read(p, out_mode, size, tops)
        arrays[split] = (x, np.asarray(labels, dtype=np.int64), [str(p.relative_to(d)) for p in paths])
    if split_given:
        (x_tr, y_tr, f_tr), (x_te, y_te, f_te) = arrays["train"], arrays["test"]
    else:
        x, y, f = arrays["all"]
        tr, te = stratified_split(y, test_fraction, split_seed)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        f_tr, f_te = [f[i] for i in tr], [f[i] for i in te]
    options = {"size": list(size) if size else None, "mode": out_mode}
    if not split_given:
        options.update(test_fraction=test_fraction, split_seed=split_seed)
    info = {"source": str(d), "format": "folder", "options": options, "skipped_files": skipped,
            "skipped_folders": len(nested),
            "files": {"train": f_tr, "test": f_te}}
    return Dataset(x_tr, y_tr, x_te, y_te, classes, name=f"folder:{d.name}",
                   image_shape=(h, w, 1 if out_mode == "L" else 3), meta=info)
