"""A problem = data + model factory + per-sample loss, with exact, seeded augmentation.

Batches are addressed by sample indices and an augmentation seed, never drawn from a stateful
loader: ``train_batch(rows, aug_seed)`` returns the same tensors on every call, so any step of
a trajectory and any line can be rebuilt exactly (DESIGN.md, data flow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ProblemConfig
from ..errors import ConfigError
from . import datasets
from .data import ImageData
from .models import make_model

LossFn = Callable[[Tensor, Tensor], Tensor]


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy ``ℓ_i = −log softmax(z_i)[y_i]``, shape ``[n]``."""
    return F.cross_entropy(logits, targets, reduction="none")


@dataclass(frozen=True)
class Augmentation:
    """Random crop with zero padding, optional horizontal flip, then normalisation (SPEC §1.2).

    Attributes:
        mean, std: per-channel normalisation of pixel values in [0, 1].
        crop_padding: zero padding before the random crop back to the original size (0 = none).
        flip: random horizontal flip with p = 0.5.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False

    def normalise(self, x: Tensor) -> Tensor:
        """``(x/255 − mean)/std`` for uint8 ``x [n, C, H, W]`` → float32."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def apply(self, x: Tensor, seed: int) -> Tensor:
        """Augment uint8 images ``[n, C, H, W]`` with a generator seeded ``seed``; → float32."""
        n, c, h, w = x.shape
        g = torch.Generator().manual_seed(seed)
        p = self.crop_padding
        oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        padded = F.pad(x, (p, p, p, p)) if p else x
        rows = oy[:, None] + torch.arange(h)[None, :]  # [n, H]
        cols = torch.arange(w)[None, :].expand(n, w)
        cols = torch.where(flip[:, None], w - 1 - cols, cols) + ox[:, None]  # [n, W]
        idx_n = torch.arange(n)[:, None, None, None]
        idx_c = torch.arange(c)[None, :, None, None]
        out = padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
        return self.normalise(out)


@dataclass
class Problem:
    """Data, model and per-sample loss of one run.

    Attributes:
        train: the training set used for the trajectory and the full-batch lines (``N_train``).
        val: the validation set (``M``), evaluated un-augmented.
        augmentation: crop/flip/normalise policy; training batches are augmented when
            ``augment`` is True.
        model_factory: builds a freshly initialised model (seed the global RNG first).
        loss_fn: per-sample loss ``(logits [n, classes], targets [n]) → [n]``.
        batch_size: ``B``, the training and BatchNorm evaluation batch size.
    """

    name: str
    train: ImageData
    val: ImageData
    augmentation: Augmentation
    augment: bool
    model_factory: Callable[[], nn.Module]
    batch_size: int
    loss_fn: LossFn = per_sample_cross_entropy

    def train_batch(self, rows: np.ndarray, aug_seed: int | None) -> tuple[Tensor, Tensor]:
        """Training samples ``rows`` (positions into ``train``), augmented with ``aug_seed``.

        ``aug_seed=None`` (or ``augment=False``) returns them normalised, un-augmented.
        """
        x = torch.from_numpy(self.train.images[rows])
        y = torch.from_numpy(self.train.labels[rows])
        if aug_seed is None or not self.augment:
            return self.augmentation.normalise(x), y
        return self.augmentation.apply(x, aug_seed), y

    def val_batch(self, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """Validation samples ``rows``, normalised, never augmented (fixes SPEC §9.14)."""
        x = torch.from_numpy(self.val.images[rows])
        return self.augmentation.normalise(x), torch.from_numpy(self.val.labels[rows])


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # SPEC §1.2
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
DIGITS_MEAN, DIGITS_STD = (0.3050,), (0.3760,)


def _check_sizes(name: str, n_pool: int, train_size: int, val_size: int) -> None:
    if train_size + val_size > n_pool:
        raise ConfigError(
            f"{name}: train_size + val_size = {train_size + val_size} exceeds the "
            f"{n_pool} available images; lower problem.train_size/val_size"
        )


def make_problem(cfg: ProblemConfig) -> Problem:
    """Build the problem a configuration names (loads data; may raise ``DataError``).

    Digits: a fixed seeded split of sklearn's 1,797 bundled images (no network).
    CIFAR-10 / Fashion-MNIST: the paper's nested random split of the training split
    (SPEC §1.1, seed ``split_seed``): pools of 80 %/20 %, then ``train_size``/``val_size``
    from them (4000/1000 of CIFAR-10's 50,000 images = 8 % + 2 %).
    """
    data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
    if cfg.dataset == "digits":
        full = datasets.load_digits()
        train_size = cfg.train_size or 1280
        val_size = cfg.val_size or len(full) - train_size
        _check_sizes("digits", len(full), train_size, val_size)
        perm = np.random.default_rng(cfg.split_seed).permutation(len(full))
        train, val = (
            full.subset(perm[:train_size]),
            full.subset(perm[train_size : train_size + val_size]),
        )
        aug = Augmentation(DIGITS_MEAN, DIGITS_STD, crop_padding=1, flip=False)
        in_ch, size = 1, 8
    else:
        if cfg.dataset == "cifar10":
            full, _ = datasets.load_cifar10(data_dir, download=cfg.download)
            aug = Augmentation(CIFAR_MEAN, CIFAR_STD, crop_padding=4, flip=True)
            defaults = (4000, 1000)
        else:
            full, _ = datasets.load_fashion_mnist(data_dir, download=cfg.download)
            aug = Augmentation(FMNIST_MEAN, FMNIST_STD, crop_padding=4, flip=True)
            defaults = (int(0.08 * len(full)), int(0.02 * len(full)))
        n = len(full)
        pool_train = int(0.8 * n)
        train_size = cfg.train_size or defaults[0]
        val_size = cfg.val_size or defaults[1]
        if train_size > pool_train or val_size > n - pool_train:
            raise ConfigError(
                f"{cfg.dataset}: train_size must be ≤ {pool_train} and val_size ≤ "
                f"{n - pool_train} (80/20 pools of the training split)"
            )
        tr, va = datasets.paper_split(
            n, pool_train=pool_train, train_size=train_size, val_size=val_size, seed=cfg.split_seed
        )
        train, val = full.subset(tr), full.subset(va)
        in_ch, size = full.images.shape[1], full.images.shape[2]
    if cfg.batch_size > len(train):
        raise ConfigError(
            f"problem.batch_size {cfg.batch_size} exceeds the {len(train)} training "
            "images; lower it"
        )
    model_name = cfg.model

    def factory() -> nn.Module:
        return make_model(model_name, in_channels=in_ch, num_classes=10, image_size=size)

    return Problem(
        name=cfg.dataset,
        train=train,
        val=val,
        augmentation=aug,
        augment=cfg.augment,
        model_factory=factory,
        batch_size=cfg.batch_size,
    )
