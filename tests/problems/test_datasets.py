"""Tests for the data set loaders, on small fake data sets (offline, fast)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from steplines.errors import DataError
from steplines.problems.datasets import (
    CIFAR10_ARCHIVE,
    CIFAR10_FOLDER,
    FASHION_MNIST_SYSTEM_DIR,
    download_file,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    paper_split,
)

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PER_BATCH = 20


def assert_one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    message = str(err.value)
    assert message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Fake CIFAR-10
# --------------------------------------------------------------------------------------------


def fake_batch(seed: int, n: int = PER_BATCH) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def write_cifar_folder(root: Path) -> Path:
    """Write a fake ``cifar-10-batches-py`` under ``root``; return the folder."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(BATCHES):
        data, labels = fake_batch(i)
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def write_cifar_archive(root: Path) -> Path:
    """Write a fake ``cifar-10-python.tar.gz`` into ``root``; return its path."""
    staging = root / "staging"
    write_cifar_folder(staging)
    archive = root / CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / CIFAR10_FOLDER, arcname=CIFAR10_FOLDER)
    return archive


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_fake_cifar(train, test) -> None:
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert test.images.shape == (PER_BATCH, 3, 32, 32)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.indices, np.arange(5 * PER_BATCH))
    np.testing.assert_array_equal(test.indices, np.arange(PER_BATCH))
    # Batches are concatenated in order; each 3072-row is three 32×32 planes (R, G, B).
    for i in range(5):
        data, labels = fake_batch(i)
        rows = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        np.testing.assert_array_equal(train.labels[rows], labels)
        img = train.images[rows]
        np.testing.assert_array_equal(img.reshape(PER_BATCH, 3072), data)
        assert img[3, 1, 2, 5] == data[3, 1024 + 2 * 32 + 5]
        assert img[0, 2, 31, 31] == data[0, 3071]
    data, labels = fake_batch(5)
    np.testing.assert_array_equal(test.images.reshape(PER_BATCH, 3072), data)
    np.testing.assert_array_equal(test.labels, labels)


def test_cifar_from_folder(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path)
    check_fake_cifar(*load_cifar10(tmp_path))


def test_cifar_data_dir_is_batches_folder(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path)
    check_fake_cifar(*load_cifar10(folder))


def test_cifar_from_archive_without_extracting(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path)
    check_fake_cifar(*load_cifar10(tmp_path))
    assert not (tmp_path / CIFAR10_FOLDER).exists()


def test_cifar_accepts_str_path(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path)
    check_fake_cifar(*load_cifar10(str(tmp_path)))


def test_cifar_no_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_cifar10(None)
    assert "--data-dir" in assert_one_line(err)
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "nope")
    message = assert_one_line(err)
    assert "does not exist" in message and "nope" in message


def test_cifar_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    message = assert_one_line(err)
    assert CIFAR10_FOLDER in message and CIFAR10_ARCHIVE in message and "--download" in message


def test_cifar_incomplete_folder(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    message = assert_one_line(err)
    assert "incomplete" in message and "data_batch_3" in message
    assert "data_batch_2" not in message


def test_cifar_incomplete_folder_falls_back_to_archive(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path)
    folder = write_cifar_folder(tmp_path)
    (folder / "test_batch").unlink()
    check_fake_cifar(*load_cifar10(tmp_path))


@pytest.mark.parametrize(
    "content",
    [
        b"garbage bytes, not a pickle",
        pickle.dumps({b"labels": [1, 2]}),
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
        pickle.dumps([1, 2, 3]),
        pickle.dumps(pytest.raises),  # a global outside the allowed numpy constructors
    ],
    ids=["garbage", "no-data", "bad-shape", "label-count", "dtype", "not-dict", "global"],
)
def test_cifar_corrupt_batch(tmp_path: Path, content: bytes) -> None:
    folder = write_cifar_folder(tmp_path)
    (folder / "data_batch_4").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    message = assert_one_line(err)
    assert "data_batch_4" in message and "corrupt" in message and "delete it" in message


def test_cifar_corrupt_archive(tmp_path: Path) -> None:
    (tmp_path / CIFAR10_ARCHIVE).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    message = assert_one_line(err)
    assert CIFAR10_ARCHIVE in message and "delete it" in message


def test_cifar_archive_missing_member(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    folder = write_cifar_folder(staging)
    (folder / "data_batch_5").unlink()
    with tarfile.open(tmp_path / CIFAR10_ARCHIVE, "w:gz") as tar:
        tar.add(folder, arcname=CIFAR10_FOLDER)
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert "data_batch_5" in assert_one_line(err)


# --------------------------------------------------------------------------------------------
# Downloads from a loopback HTTP server
# --------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Serve a fresh folder over HTTP on 127.0.0.1; yield (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x"


def test_cifar_download(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base = http_root
    archive = write_cifar_archive(served)
    data_dir = tmp_path / "data" / "cifar"
    train, test = load_cifar10(
        data_dir, download=True, url=base + CIFAR10_ARCHIVE, md5=md5_of(archive)
    )
    check_fake_cifar(train, test)
    assert (data_dir / CIFAR10_ARCHIVE).read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in data_dir.iterdir()) == [CIFAR10_ARCHIVE]
    # Second call finds the archive and does not download again (server URL now invalid).
    check_fake_cifar(*load_cifar10(data_dir, download=True, url=closed_port_url()))


def test_cifar_download_wrong_md5(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base = http_root
    write_cifar_archive(served)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_cifar10(data_dir, download=True, url=base + CIFAR10_ARCHIVE, md5="0" * 32)
    message = assert_one_line(err)
    assert "checksum" in message and "0" * 32 in message
    assert list(data_dir.iterdir()) == []


def test_download_http_error(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, base = http_root
    with pytest.raises(DataError) as err:
        download_file(base + "missing.tar.gz", tmp_path / "out" / "f", "0" * 32, timeout=5)
    message = assert_one_line(err)
    assert "could not download" in message and str(tmp_path / "out") in message
    assert list((tmp_path / "out").iterdir()) == []


def test_download_unreachable(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "d", download=True, url=url, md5="0" * 32)
    message = assert_one_line(err)
    assert "could not download" in message and url in message and "by hand" in message
    assert not any((tmp_path / "d").iterdir())


def test_download_file_ok(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base = http_root
    payload = bytes(range(256)) * 1000
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "sub" / "blob.bin"
    md5 = hashlib.md5(payload).hexdigest()
    assert download_file(base + "blob.bin", dest, md5.upper(), timeout=5) == dest
    assert dest.read_bytes() == payload
    assert not dest.with_name("blob.bin.part").exists()


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------

FASHION_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(folder: Path, *, gz: bool, n_train: int = 7, n_test: int = 3) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (images, labels)
        for name, content in zip(
            FASHION_NAMES[split], (idx_bytes(images, 2051), idx_bytes(labels, 2049)), strict=True
        ):
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_fashion_local(tmp_path: Path, gz: bool) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    train, test = load_fashion_mnist(tmp_path, system_dir=None)
    for data, split in ((train, "train"), (test, "test")):
        images, labels = arrays[split]
        assert data.images.shape == (len(labels), 1, 28, 28)
        assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.images[:, 0], images)
        np.testing.assert_array_equal(data.labels, labels)
        np.testing.assert_array_equal(data.indices, np.arange(len(labels)))


def test_fashion_bad_magic(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes((2051).to_bytes(4, "big") + path.read_bytes()[4:])
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, system_dir=None)
    message = assert_one_line(err)
    assert "t10k-labels-idx1-ubyte" in message and "magic" in message


def test_fashion_bad_size_and_gzip(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, system_dir=None)
    assert "train-images-idx3-ubyte" in assert_one_line(err)
    path.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, system_dir=None)
    assert "train-images-idx3-ubyte.gz" in assert_one_line(err)


def test_fashion_count_mismatch(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=True)
    labels = np.zeros(4, np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, system_dir=None)
    assert "disagree" in assert_one_line(err)


def test_fashion_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, system_dir=tmp_path / "none")
    message = assert_one_line(err)
    assert "train-images-idx3-ubyte" in message and "dataset-fashion-mnist" in message
    with pytest.raises(DataError) as err:
        load_fashion_mnist(None, system_dir=None)
    assert "--data-dir" in assert_one_line(err)


def test_fashion_system_dir_fallback(tmp_path: Path) -> None:
    system = tmp_path / "system"
    write_fashion(system, gz=True)
    train, _ = load_fashion_mnist(None, system_dir=system)
    assert len(train) == 7
    # a --data-dir that is missing or incomplete never falls back to the system copy
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path / "empty", system_dir=system)
    assert "--data-dir" in assert_one_line(err) and "system copy" in str(err.value)
    partial = tmp_path / "partial"
    write_fashion(partial, gz=True)
    next(partial.glob("t10k-labels*")).unlink()
    with pytest.raises(DataError) as err:
        load_fashion_mnist(partial, system_dir=system)
    assert "t10k-labels-idx1-ubyte[.gz] missing" in assert_one_line(err)


def test_fashion_download(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base = http_root
    write_fashion(served, gz=True)
    md5s = {p.name: md5_of(p) for p in served.iterdir()}
    data_dir = tmp_path / "fm"
    train, test = load_fashion_mnist(
        data_dir, download=True, url_base=base, md5s=md5s, system_dir=None
    )
    assert (len(train), len(test)) == (7, 3)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(md5s)
    bad = dict(md5s, **{"t10k-images-idx3-ubyte.gz": "f" * 32})
    (data_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_fashion_mnist(data_dir, download=True, url_base=base, md5s=bad, system_dir=None)
    assert "checksum" in assert_one_line(err)
    assert not (data_dir / "t10k-images-idx3-ubyte.gz").exists()
    assert not (data_dir / "t10k-images-idx3-ubyte.gz.part").exists()


@pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM_DIR.exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_debian_package() -> None:
    train, test = load_fashion_mnist(None)
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    for data in (train, test):
        assert data.labels.min() == 0 and data.labels.max() == 9
        assert np.bincount(data.labels).tolist() == [len(data) // 10] * 10


# --------------------------------------------------------------------------------------------
# paper_split and digits
# --------------------------------------------------------------------------------------------


def test_paper_split_cifar() -> None:
    train_idx, val_idx = paper_split(50000, pool_train=40000, train_size=4000, val_size=1000)
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert train_idx.shape == (4000,) and val_idx.shape == (1000,)
    assert len(np.unique(train_idx)) == 4000 and len(np.unique(val_idx)) == 1000
    assert not np.intersect1d(train_idx, val_idx).size
    assert min(train_idx.min(), val_idx.min()) >= 0 and max(train_idx.max(), val_idx.max()) < 50000

    again = paper_split(50000, pool_train=40000, train_size=4000, val_size=1000, seed=42)
    np.testing.assert_array_equal(again[0], train_idx)
    np.testing.assert_array_equal(again[1], val_idx)

    # Independent re-derivation with randperm (random_split's definition).
    perm = torch.randperm(50000, generator=torch.Generator().manual_seed(42)).numpy()
    train_pool, val_pool = perm[:40000], perm[40000:]
    perm_t = torch.randperm(40000, generator=torch.Generator().manual_seed(42)).numpy()
    perm_v = torch.randperm(10000, generator=torch.Generator().manual_seed(42)).numpy()
    np.testing.assert_array_equal(train_idx, train_pool[perm_t[:4000]])
    np.testing.assert_array_equal(val_idx, val_pool[perm_v[:1000]])

    other = paper_split(50000, pool_train=40000, train_size=4000, val_size=1000, seed=1)
    assert not np.array_equal(other[0], train_idx)


def test_paper_split_bad_sizes() -> None:
    with pytest.raises(ValueError):
        paper_split(100, pool_train=80, train_size=81, val_size=1)
    with pytest.raises(ValueError):
        paper_split(100, pool_train=101, train_size=1, val_size=1)


def test_load_digits() -> None:
    data = load_digits()
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == np.uint8
    assert data.labels.shape == (1797,) and data.labels.dtype == np.int64
    assert data.images.min() == 0 and data.images.max() == 255
    assert set(np.unique(data.labels).tolist()) == set(range(10))
    np.testing.assert_array_equal(data.indices, np.arange(1797))
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load().images
    np.testing.assert_array_equal(data.images[:, 0], np.rint(raw * 255 / 16).astype(np.uint8))
