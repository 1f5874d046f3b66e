"""Loaders for the image data sets of the paper, returning :class:`ImageData` (no torchvision).

* :func:`load_digits` — scikit-learn's bundled 8×8 digits (no files, no network): the demo set.
* :func:`load_cifar10` — the standard "python version" of CIFAR-10, read from an extracted
  ``cifar-10-batches-py/`` folder or straight from ``cifar-10-python.tar.gz`` (members are read in
  memory; the archive is never extracted), optionally downloaded first.
* :func:`load_fashion_mnist` — the four IDX files, raw or gzipped, from ``--data-dir``, from the
  Debian package ``dataset-fashion-mnist`` (:data:`FASHION_MNIST_SYSTEM_DIR`), or downloaded.
* :func:`paper_split` — the paper's train/validation subset indices (docs/method.md §1.1).

Downloads (:func:`download_file`) write ``NAME.part``, check the md5 and only then rename, so a
failed or corrupt download never leaves a file that a later run would trust. Checksums are only
checked on download: locally present files are validated by parsing them (shape, size, magic),
and a corrupt one raises :class:`DataError` naming it.

Pickled CIFAR-10 batches are read with a restricted unpickler that only accepts the few numpy
constructors needed for arrays, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steplines.errors import DataError
from steplines.problems.data import ImageData

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_FOLDER",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5S",
    "FASHION_MNIST_SYSTEM_DIR",
    "FASHION_MNIST_URL_BASE",
    "download_file",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "paper_split",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Official download location of the CIFAR-10 python version."""
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
"""md5 of the official ``cifar-10-python.tar.gz``."""
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
_CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
_CIFAR10_ROW = 3 * 32 * 32

FASHION_MNIST_URL_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Official download location of Fashion-MNIST (the upstream README's links)."""
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four files (gzipped).

Note that Debian re-compressed them: the decompressed IDX files are the official ones, but the
``.gz`` files differ byte-wise from the official downloads (no file name in the gzip header), so
their md5 does not match :data:`FASHION_MNIST_MD5S`. They are validated by parsing, like any
local file.
"""
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""Base names (without ``.gz``) of the four IDX files."""
FASHION_MNIST_MD5S = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
"""md5 of each official ``.gz`` download, keyed by file name (from the upstream README)."""

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_CHUNK = 1 << 20


def _one_line(text: object) -> str:
    """Collapse whitespace (including newlines) so that an error message stays on one line."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def download_file(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, checking its md5.

    The data is streamed into ``dest.part`` (parent folders are created), its md5 compared with
    ``md5``, and only then renamed to ``dest``. On any failure the partial file is removed.

    Args:
        url: What to download (any scheme urllib understands).
        dest: Final path of the file.
        md5: Expected md5 hex digest of the complete file.
        timeout: Socket timeout in seconds for connecting and for each read.

    Returns:
        ``dest``.

    Raises:
        DataError: The download failed (network, HTTP error, bad URL) or the checksum differs.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create download folder {dest.parent} ({_one_line(exc)}); "
            "pass a writable --data-dir DIR"
        ) from exc
    digest = hashlib.md5()
    done = False
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # it holds the open response
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DataError(
                f"could not download {url} ({_one_line(reason) or type(exc).__name__}); "
                f"download it by hand into {dest.parent}"
            ) from exc
        got = digest.hexdigest()
        if got != md5.lower():
            raise DataError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {got} (download corrupt "
                f"or changed); retry, or download it by hand into {dest.parent}"
            )
        part.replace(dest)
        done = True
    finally:
        if not done:
            with contextlib.suppress(OSError):
                part.unlink()
    return dest


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------


def load_digits() -> ImageData:
    """Load scikit-learn's bundled 8×8 digits (1797 images, 10 classes).

    The 0…16 intensities are scaled to 0…255 as ``round(v * 255 / 16)``.

    Returns:
        ``ImageData`` with images ``uint8 [1797, 1, 8, 8]``, labels ``int64`` in 0…9 and
        indices ``0…1796``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)
    images = np.rint(values * 255.0 / 16.0).clip(0, 255).astype(np.uint8)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageData(images, labels, np.arange(len(labels), dtype=np.int64))


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled uint8 numpy array may reference (old and new numpy module names)."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals needed to rebuild arrays."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _ArrayUnpickler._allowed is None:
            _ArrayUnpickler._allowed = _numpy_globals()
        try:
            return _ArrayUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}") from None


def _parse_cifar_batch(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse one pickled CIFAR-10 batch.

    Args:
        raw: The file's bytes.

    Returns:
        ``(images uint8 [n, 3, 32, 32], labels int64 [n])``.

    Raises:
        ValueError: With a short reason when the content is not a valid batch.
    """
    try:
        # latin1: the official batches are Python 2 pickles (str keys after decoding); batches
        # pickled by Python 3 keep their bytes keys.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means a corrupt file
        raise ValueError(f"cannot unpickle: {_one_line(exc) or type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict, got {type(obj).__name__}")

    def get(key: str) -> Any:
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise ValueError(f"missing key {key!r}")

    data = get("data")
    labels = get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ValueError("'data' is not a uint8 array")
    if data.ndim != 2 or data.shape[1] != _CIFAR10_ROW:
        raise ValueError(f"'data' has shape {data.shape}, expected [n, {_CIFAR10_ROW}]")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError("'labels' is not a list of integers") from None
    if labels_arr.shape != (data.shape[0],):
        raise ValueError(f"{labels_arr.size} labels for {data.shape[0]} images")
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() > 9):
        raise ValueError("labels outside 0…9")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    return images, labels_arr


def _assemble_cifar(
    read: Callable[[str], bytes], describe: Callable[[str, str], DataError]
) -> tuple[ImageData, ImageData]:
    """Read all six batches via ``read(name)``; ``describe(name, reason)`` builds the error."""
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in _CIFAR10_FILES:
        try:
            parts[name] = _parse_cifar_batch(read(name))
        except ValueError as exc:
            raise describe(name, str(exc)) from None
    train_images = np.concatenate([parts[n][0] for n in CIFAR10_TRAIN_FILES])
    train_labels = np.concatenate([parts[n][1] for n in CIFAR10_TRAIN_FILES])
    test_images, test_labels = parts[CIFAR10_TEST_FILE]
    train = ImageData(train_images, train_labels, np.arange(len(train_labels), dtype=np.int64))
    test = ImageData(test_images, test_labels, np.arange(len(test_labels), dtype=np.int64))
    return train, test


def _cifar_from_folder(folder: Path) -> tuple[ImageData, ImageData]:
    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read: {_one_line(exc)}") from None

    def describe(name: str, reason: str) -> DataError:
        return DataError(
            f"CIFAR-10 batch file {folder / name} is corrupt ({reason}); delete it and "
            f"re-extract {CIFAR10_ARCHIVE} (or re-download it with --download)"
        )

    return _assemble_cifar(read, describe)


def _cifar_from_archive(archive: Path) -> tuple[ImageData, ImageData]:
    def corrupt(reason: str) -> DataError:
        return DataError(
            f"CIFAR-10 archive {archive} is corrupt ({reason}); delete it and download it "
            "again (--download)"
        )

    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by `with tar` below)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise corrupt(_one_line(exc) or type(exc).__name__) from None
    with tar:
        try:
            members = {
                m.name.lstrip("./").split("/")[-1]: m
                for m in tar.getmembers()
                if m.isfile() and m.name.lstrip("./").split("/")[-1] in _CIFAR10_FILES
            }
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise corrupt(_one_line(exc) or type(exc).__name__) from None
        missing = [n for n in _CIFAR10_FILES if n not in members]
        if missing:
            raise corrupt(f"missing {', '.join(missing)}")

        def read(name: str) -> bytes:
            try:
                handle = tar.extractfile(members[name])
                if handle is None:
                    raise ValueError("not a regular file")
                with handle:
                    return handle.read()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"cannot read: {_one_line(exc) or type(exc).__name__}") from None

        def describe(name: str, reason: str) -> DataError:
            return corrupt(f"member {members[name].name}: {reason}")

        return _assemble_cifar(read, describe)


def load_cifar10(
    data_dir: Path | str | None,
    *,
    download: bool = False,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
) -> tuple[ImageData, ImageData]:
    """Load CIFAR-10 (python version) as ``(train, test)``.

    Looks in ``data_dir`` for, in this order: a complete ``cifar-10-batches-py/`` folder (or
    ``data_dir`` being that folder itself, recognised by containing batch files); the archive
    ``cifar-10-python.tar.gz``, read in memory without extracting; and, with ``download=True``,
    downloads the archive into ``data_dir`` (md5-checked) and reads it. Local files are not
    md5-checked (a re-packed archive is fine) but every batch is validated while parsing.

    Args:
        data_dir: Folder holding the data (created when downloading).
        download: Download the archive when no usable data is found.
        url: Download URL (official by default; tests point it at a local server).
        md5: Expected md5 of the downloaded archive.

    Returns:
        ``(train, test)``: images ``uint8 [N, 3, 32, 32]`` (each 3072-byte row is three 32×32
        planes R, G, B), labels ``int64``, indices ``0…N-1``. The official files give 50,000 and
        10,000 images; any count per batch is accepted.

    Raises:
        DataError: No data directory, data missing or incomplete, a corrupt batch or archive,
            or a failed download.
    """
    hint = "pass --data-dir DIR or allow the download with --download"
    if data_dir is None:
        raise DataError(f"no CIFAR-10 data directory given; {hint}")
    data_dir = Path(data_dir).expanduser()
    expected = f"expected {CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE}"
    if not data_dir.is_dir() and not download:
        raise DataError(f"CIFAR-10 data directory {data_dir} does not exist ({expected}); {hint}")

    folder: Path | None = None
    if (data_dir / CIFAR10_FOLDER).is_dir():
        folder = data_dir / CIFAR10_FOLDER
    elif data_dir.is_dir() and any((data_dir / n).exists() for n in _CIFAR10_FILES):
        folder = data_dir
    missing = [n for n in _CIFAR10_FILES if folder is None or not (folder / n).is_file()]
    if folder is not None and not missing:
        return _cifar_from_folder(folder)

    archive = data_dir / CIFAR10_ARCHIVE
    if archive.is_file():
        return _cifar_from_archive(archive)
    if download:
        download_file(url, archive, md5)
        return _cifar_from_archive(archive)
    if folder is not None:
        raise DataError(
            f"CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}; re-extract "
            f"{CIFAR10_ARCHIVE} there or allow the download with --download"
        )
    raise DataError(f"CIFAR-10 not found in {data_dir}: {expected}; {hint}")


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


def _find_idx(folder: Path, base: str) -> Path | None:
    """Return ``folder/base`` or ``folder/base.gz`` (raw preferred), or None."""
    for name in (base, base + ".gz"):
        path = folder / name
        if path.is_file():
            return path
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) of unsigned bytes with the given magic number.

    Returns:
        ``uint8 [n]`` for labels (magic 2049) or ``uint8 [n, rows, cols]`` for images (2051).

    Raises:
        DataError: Unreadable, bad magic, or a size that does not match the header.
    """

    def corrupt(reason: str) -> DataError:
        return DataError(
            f"Fashion-MNIST file {path} is corrupt ({reason}); delete it and download it again "
            "(--download)"
        )

    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt(_one_line(exc) or type(exc).__name__) from None
    ndim = 3 if magic == _IDX_IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(f"only {len(raw)} bytes")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise corrupt(f"magic number {got}, expected {magic}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) != header + size:
        raise corrupt(f"{len(raw) - header} data bytes, header says {size} ({dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _fashion_split(files: Mapping[str, Path], split: str) -> ImageData:
    images = _read_idx(files[f"{split}_images"], _IDX_IMAGES_MAGIC)
    labels = _read_idx(files[f"{split}_labels"], _IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(
            f"Fashion-MNIST {split} files {files[f'{split}_images']} and "
            f"{files[f'{split}_labels']} disagree ({len(images)} images, {len(labels)} labels); "
            "delete them and download them again (--download)"
        )
    if labels.size and labels.max() > 9:
        raise DataError(
            f"Fashion-MNIST file {files[f'{split}_labels']} is corrupt (labels outside 0…9); "
            "delete it and download it again (--download)"
        )
    return ImageData(images[:, None, :, :], labels, np.arange(len(labels), dtype=np.int64))


def load_fashion_mnist(
    data_dir: Path | str | None,
    *,
    download: bool = False,
    url_base: str = FASHION_MNIST_URL_BASE,
    md5s: Mapping[str, str] = FASHION_MNIST_MD5S,
    system_dir: Path | None = FASHION_MNIST_SYSTEM_DIR,
) -> tuple[ImageData, ImageData]:
    """Load Fashion-MNIST as ``(train, test)``.

    The four IDX files (each raw or ``.gz``) are looked for in ``data_dir``, then in
    ``system_dir`` (Debian's ``dataset-fashion-mnist`` location), and with ``download=True``
    the missing ones are downloaded as ``.gz`` into ``data_dir`` with an md5 check.

    Args:
        data_dir: Folder holding the files (or receiving the download); may be None when the
            Debian package is installed.
        download: Download missing files from ``url_base`` into ``data_dir``.
        url_base: Base URL the ``.gz`` file names are appended to.
        md5s: Expected md5 per ``.gz`` file name.
        system_dir: System-wide fallback folder; None disables it.

    Returns:
        ``(train, test)``: images ``uint8 [N, 1, 28, 28]``, labels ``int64`` in 0…9, indices
        ``0…N-1`` (60,000 and 10,000 images for the official files).

    Raises:
        DataError: Files not found (and no download), corrupt, or a failed download.
    """
    folders: list[Path] = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        folders.append(data_dir)
    elif system_dir is not None:  # a named folder never silently falls back to another copy
        folders.append(Path(system_dir))
    for folder in folders:
        found = {key: _find_idx(folder, base) for key, base in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            files = {key: path for key, path in found.items() if path is not None}
            return _fashion_split(files, "train"), _fashion_split(files, "test")

    if download:
        if data_dir is None:
            raise DataError(
                "Fashion-MNIST download needs a target folder; pass --data-dir DIR with --download"
            )
        files = {}
        for key, base in FASHION_MNIST_FILES.items():
            path = _find_idx(data_dir, base)
            if path is None:
                gz = base + ".gz"
                if gz not in md5s:
                    raise DataError(f"no md5 known for {gz}; pass it in md5s")
                path = download_file(url_base.rstrip("/") + "/" + gz, data_dir / gz, md5s[gz])
            files[key] = path
        return _fashion_split(files, "train"), _fashion_split(files, "test")

    where = " or ".join(str(f) for f in folders) or "no folder (no --data-dir given)"
    expected = ", ".join(f"{b}[.gz]" for b in FASHION_MNIST_FILES.values())
    if data_dir is not None:
        missing = [b for b in FASHION_MNIST_FILES.values() if _find_idx(data_dir, b) is None]
        raise DataError(
            f"Fashion-MNIST not found in --data-dir {data_dir}: {', '.join(missing)}[.gz] "
            f"missing (expected {expected}); put them there, add --download, or leave out "
            "--data-dir to use the system copy (Debian package dataset-fashion-mnist)"
        )
    raise DataError(
        f"Fashion-MNIST not found in {where}: expected {expected}; pass --data-dir DIR, install "
        "the Debian package dataset-fashion-mnist, or allow the download with --download"
    )


# --------------------------------------------------------------------------------------------
# The paper's subset split
# --------------------------------------------------------------------------------------------


def paper_split(
    n_total: int, *, pool_train: int, train_size: int, val_size: int, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the paper's training and validation subsets of a training split (docs/method.md §1.1).

    Exactly the original procedure: ``random_split(range(n_total), [pool_train, rest])`` with a
    generator seeded ``seed`` gives a training pool and a validation pool; each pool is then
    split again with a *new* generator seeded ``seed``, into ``[train_size, rest]`` and
    ``[val_size, rest]`` respectively, and the first parts are kept. For CIFAR-10:
    ``paper_split(50000, pool_train=40000, train_size=4000, val_size=1000)``.

    Args:
        n_total: Size of the source split (e.g. 50,000).
        pool_train: Size of the training pool; the validation pool gets the rest.
        train_size: Images kept from the training pool.
        val_size: Images kept from the validation pool.
        seed: Seed of each of the three generators.

    Returns:
        ``(train_idx, val_idx)``: ``int64`` indices into the source split, in the order
        ``random_split`` yields them.

    Raises:
        ValueError: Sizes that do not fit.
    """
    import torch
    from torch.utils.data import random_split

    pool_val = n_total - pool_train
    if not 0 <= pool_train <= n_total:
        raise ValueError(f"pool_train={pool_train} must be within 0…{n_total}")
    if not 0 <= train_size <= pool_train or not 0 <= val_size <= pool_val:
        raise ValueError(
            f"train_size={train_size} / val_size={val_size} exceed the pools "
            f"({pool_train} / {pool_val})"
        )
    train_pool, val_pool = random_split(
        range(n_total), [pool_train, pool_val], generator=torch.Generator().manual_seed(seed)
    )

    def first_part(pool: Any, size: int) -> np.ndarray:
        part, _ = random_split(
            pool, [size, len(pool) - size], generator=torch.Generator().manual_seed(seed)
        )
        return np.asarray(pool.indices, dtype=np.int64)[np.asarray(part.indices, dtype=np.int64)]

    return first_part(train_pool, train_size), first_part(val_pool, val_size)
