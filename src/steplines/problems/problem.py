"""A problem = data + model factory + per-sample loss, with exact, seeded augmentation.

Batches are addressed by sample indices and an augmentation seed, never drawn from a stateful
loader: ``train_batch(rows, aug_seed)`` returns the same tensors on every call, so any step of
a trajectory and any line can be rebuilt exactly (docs/design.md).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ProblemConfig
from ..errors import ConfigError, SteplinesError
from . import datasets
from .data import ImageData
from .models import make_model

LossFn = Callable[[Tensor, Tensor], Tensor]


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy ``ℓ_i = −log softmax(z_i)[y_i]``, shape ``[n]``."""
    return F.cross_entropy(logits, targets, reduction="none")


@dataclass(frozen=True)
class Augmentation:
    """Random crop with zero padding, optional flip, then normalisation (docs/method.md §1.2).

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


@dataclass(frozen=True)
class TensorData:
    """A user's data set as tensors: ``inputs [N, ...]``, ``targets [N, ...]``.

    Attributes:
        inputs: model inputs, one row per sample (any dtype; floating inputs follow the run's
            dtype, integer inputs such as token ids are kept as they are).
        targets: what ``loss_fn`` compares the model output with, one row per sample.
        indices: ``int64 [N]`` id of each sample in its source (recorded in the store).
    """

    inputs: Tensor
    targets: Tensor
    indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = int(self.inputs.shape[0]) if self.inputs.ndim else -1
        if n < 0 or self.targets.ndim == 0 or int(self.targets.shape[0]) != n:
            raise ConfigError(
                f"data: inputs {tuple(self.inputs.shape)} and targets "
                f"{tuple(self.targets.shape)} must have the same number of rows [N, ...]"
            )
        if self.indices.size == 0:
            object.__setattr__(self, "indices", np.arange(n, dtype=np.int64))
        elif self.indices.shape != (n,):
            raise ConfigError(f"data: indices must have shape [{n}], got {self.indices.shape}")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def rows(self, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """Inputs and targets of ``rows`` (positions into this set)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.inputs.device)
        return self.inputs[idx], self.targets[idx.to(self.targets.device)]


def to_device(x: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move ``x`` to ``device``; floating tensors also take ``dtype`` (integer inputs stay)."""
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


@dataclass
class Problem:
    """Data, model and per-sample loss of one run.

    Attributes:
        train: the training set used for the trajectory and the full-batch lines (``N_train``).
        val: the validation set (``M``), evaluated un-augmented.
        augmentation: crop/flip/normalise policy for image data (None for tensor data);
            training batches are augmented when ``augment`` is True.
        model_factory: builds a freshly initialised model (seed the global RNG first).
        loss_fn: per-sample loss ``(output [n, ...], targets [n, ...]) → [n]``.
        batch_size: ``B``, the training and BatchNorm evaluation batch size.
        source: for a user's problem, where it came from (``spec``, ``file``, ``sha256`` of
            the file), recorded in ``provenance.json``.
    """

    name: str
    train: ImageData | TensorData
    val: ImageData | TensorData
    augmentation: Augmentation | None
    augment: bool
    model_factory: Callable[[], nn.Module]
    batch_size: int
    loss_fn: LossFn = per_sample_cross_entropy
    source: dict[str, str] | None = None

    @classmethod
    def from_tensors(
        cls,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor] | None,
        model_factory: Callable[[], nn.Module],
        loss_fn: LossFn,
        batch_size: int,
        name: str = "user",
    ) -> Problem:
        """A problem on a user's tensors (no augmentation).

        Args:
            train: ``(inputs [N, ...], targets [N, ...])``, the training set (the full batch).
            val: the validation set, or None for none (``M = 0``).
            model_factory: builds a freshly initialised model, e.g. ``lambda: MyNet()``.
            loss_fn: per-sample loss, ``(output, targets) → [n]`` (``reduction="none"``).
            batch_size: ``B``, the training and BatchNorm evaluation batch size.
            name: a name for the data set (stored with the lines).
        """
        tr = TensorData(*train)
        va = TensorData(*val) if val is not None else TensorData(tr.inputs[:0], tr.targets[:0])
        return cls(name, tr, va, None, False, model_factory, batch_size, loss_fn)

    def train_batch(self, rows: np.ndarray, aug_seed: int | None) -> tuple[Tensor, Tensor]:
        """Training samples ``rows`` (positions into ``train``), augmented with ``aug_seed``.

        ``aug_seed=None`` (or ``augment=False``) returns them normalised, un-augmented.
        """
        if isinstance(self.train, TensorData):
            return self.train.rows(rows)
        assert self.augmentation is not None
        x = torch.from_numpy(self.train.images[rows])
        y = torch.from_numpy(self.train.labels[rows])
        if aug_seed is None or not self.augment:
            return self.augmentation.normalise(x), y
        return self.augmentation.apply(x, aug_seed), y

    def val_batch(self, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """Validation samples ``rows``, normalised, never augmented (fixes docs/method.md §9.14)."""
        if isinstance(self.val, TensorData):
            return self.val.rows(rows)
        assert self.augmentation is not None
        x = torch.from_numpy(self.val.images[rows])
        return self.augmentation.normalise(x), torch.from_numpy(self.val.labels[rows])


_RETURN_HINT = (
    "it must return a steplines.Problem, e.g. Problem.from_tensors((x, y), (x_val, y_val), "
    "model_factory, per_sample_loss, batch_size) (see examples/custom_module.py)"
)


def check_problem(problem: Any, source: str = "the problem") -> Problem:
    """Check a user's problem once, cheaply, before anything is trained; return it.

    Builds the model (under a forked RNG, so no random stream moves), runs it on two training
    rows and checks that ``loss_fn`` returns one finite loss per sample (``[2]``).

    Raises:
        ConfigError: not a :class:`Problem`, a bad batch size, a model factory that does not
            build an ``nn.Module``, or a loss without per-sample reduction — in one line that
            says what to return.
    """
    if not isinstance(problem, Problem):
        raise ConfigError(f"{source} returned {type(problem).__name__}; {_RETURN_HINT}")
    n = len(problem.train)
    if not isinstance(problem.batch_size, int) or not 0 < problem.batch_size <= n:
        raise ConfigError(
            f"{source}: batch_size {problem.batch_size!r} must be an int in 1..{n} (the "
            "number of training samples)"
        )
    with torch.random.fork_rng(devices=[]):
        try:
            model = problem.model_factory()
        except (Exception, SystemExit) as err:  # a user's factory: report, do not trace back
            raise ConfigError(f"{source}: model_factory() raised {_describe(err)}") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"{source}: model_factory() returned {type(model).__name__}; it must return a "
                "freshly initialised torch.nn.Module"
            )
        x, y = problem.train_batch(np.arange(min(2, n)), None)
        p = next(model.parameters(), None)
        if p is not None:
            x, y = to_device(x, p.device, p.dtype), y.to(p.device)
        with torch.no_grad():
            try:
                loss = problem.loss_fn(model(x), y)
            except (Exception, SystemExit) as err:
                raise ConfigError(
                    f"{source}: the model or loss_fn failed on two training rows: {_describe(err)}"
                ) from None
    _check_loss(loss, int(x.shape[0]), source)
    return problem


def _check_loss(loss: Any, n: int, source: str) -> None:
    """One finite per-sample loss per row, or a one-line :class:`ConfigError`."""
    shape = tuple(loss.shape) if isinstance(loss, Tensor) else None
    if shape != (n,) or not loss.is_floating_point():
        got = f"shape {shape}" if shape is not None else type(loss).__name__
        raise ConfigError(
            f"{source}: loss_fn returned {got} for {n} samples; it must return one loss per "
            f"sample, a float tensor of shape [{n}] (use reduction='none', e.g. "
            "F.cross_entropy(out, y, reduction='none'))"
        )


def _describe(err: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame, for one-line reports."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


def _split_spec(spec: str) -> tuple[str, str]:
    """``"mod:fn"`` → ``("mod", "fn")``; a malformed spec raises :class:`ConfigError`."""
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ConfigError(f"--problem {spec!r}: give module:function or path/to/file.py:function")
    return mod_name, fn_name


def _is_path(mod_name: str) -> bool:
    return mod_name.endswith(".py") or "/" in mod_name


def resolve_problem_spec(spec: str) -> str:
    """A ``path/to/file.py:function`` spec with the path made absolute (a module spec as is).

    Stored in ``config.toml``, so that ``steplines measure`` works from any directory.
    """
    mod_name, fn_name = _split_spec(spec)
    if not _is_path(mod_name):
        return spec
    return f"{Path(mod_name).expanduser().resolve()}:{fn_name}"


def problem_file(spec: str) -> Path | None:
    """The file a spec would import, found **without executing it** (None: not found).

    A dotted module name is looked up package by package on ``sys.path`` with the path finder
    alone: no parent package's ``__init__.py`` runs (``importlib.util.find_spec`` would import
    them), so a received run's code is never executed before its SHA-256 is checked.
    """
    import importlib.machinery

    mod_name, _ = _split_spec(spec)
    if _is_path(mod_name):
        path = Path(mod_name).expanduser()
        return path.resolve() if path.is_file() else None
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    parts = mod_name.split(".")
    search: list[str] | None = None  # None: sys.path
    found = None
    for i in range(len(parts)):
        try:
            found = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), search)
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        locations = found.submodule_search_locations
        if i < len(parts) - 1:
            if locations is None:
                return None
            search = list(locations)
    origin = found.origin if found is not None else None
    return Path(origin) if origin and Path(origin).is_file() else None


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_problem_file(spec: str, expected_sha256: str) -> Path:
    """The file of ``spec``, if its SHA-256 is the one a run recorded (nothing is imported).

    Raises:
        ConfigError: the file is not found, or its SHA-256 differs — one line naming the fix.
    """
    where = f"--problem {spec!r}"
    file = problem_file(spec)
    if file is None:
        raise ConfigError(
            f"{where}: the problem file was not found; pass --problem with the path of the "
            "file the run was made with"
        )
    if (sha := file_sha256(file)) != expected_sha256:
        raise ConfigError(
            f"{where}: {file} has SHA-256 {sha[:12]}…, the run recorded "
            f"{expected_sha256[:12]}…; it is not the file the run was made with — pass "
            "--problem with the original file (nothing was imported)"
        )
    return file


def load_problem_factory(spec: str, expected_sha256: str | None = None) -> Problem:
    """Import ``module:function`` or ``path/to/file.py:function`` and build its problem.

    The function takes no arguments and returns a :class:`Problem`; a module name is looked up
    on ``sys.path`` with the current directory first (as ``python -m`` does).

    Args:
        spec: where the function is.
        expected_sha256: the SHA-256 the file must have (the one a run directory recorded);
            it is checked **before** the file is executed.

    Raises:
        ConfigError: a malformed spec, an import failure, a file whose SHA-256 is not
            ``expected_sha256``, a missing or non-callable function, a wrong signature or a
            wrong return value (:func:`check_problem`) — one line each.
    """
    where = f"--problem {spec!r}"
    mod_name, fn_name = _split_spec(spec)
    if expected_sha256 is not None:
        check_problem_file(spec, expected_sha256)
    module = _import_problem_module(mod_name, where)
    fn = _factory_function(module, mod_name, fn_name, where)
    try:
        problem = fn()
    except (Exception, SystemExit) as err:
        raise ConfigError(f"{where}: {fn_name}() raised {_describe(err)}") from None
    problem = check_problem(problem, f"{where}: {fn_name}()")
    file = getattr(module, "__file__", None)
    problem.source = {"spec": spec, "file": str(Path(file).resolve()) if file else str(file)}
    if file and Path(file).is_file():
        problem.source["sha256"] = file_sha256(Path(file))
    return problem


def _import_problem_module(mod_name: str, where: str) -> ModuleType:
    """Import the module of a spec: a file path is executed as a fresh module, a module name
    is imported from ``sys.path`` with the current directory first.

    Raises:
        ConfigError: the file is not found, the module cannot be found, or importing it
            raised (``SystemExit`` included) — one line each, named by ``where``.
    """
    try:
        if _is_path(mod_name):
            path = Path(mod_name).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: file {path} not found; check the path")
            mspec = importlib.util.spec_from_file_location(f"_steplines_user_{path.stem}", path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
    except SteplinesError:
        raise
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"{where}: cannot import {mod_name!r} ({err}); put the module on PYTHONPATH or "
            "pass path/to/file.py:function"
        ) from None
    except (Exception, SystemExit) as err:
        raise ConfigError(f"{where}: importing {mod_name!r} failed: {_describe(err)}") from None
    return module


def _factory_function(
    module: ModuleType, mod_name: str, fn_name: str, where: str
) -> Callable[[], Any]:
    """The function ``fn_name`` of ``module``, checked to be callable without arguments (a
    function without a signature, such as a builtin, is left to the call).

    Raises:
        ConfigError: no such function, or it takes arguments — one line, named by ``where``.
    """
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {mod_name!r} has no function {fn_name!r}")
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise ConfigError(
            f"{where}: {fn_name}{inspect.signature(fn)} must take no arguments; {_RETURN_HINT}"
        ) from None
    except ValueError:  # no signature (builtins): let the call decide
        pass
    return fn


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # docs/method.md §1.2
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
    A user's problem: ``factory = "module:function"`` (:func:`load_problem_factory`).
    CIFAR-10 / Fashion-MNIST: the paper's nested random split of the training split
    (docs/method.md §1.1, seed ``split_seed``): pools of 80 %/20 %, then ``train_size``/``val_size``
    from them (4000/1000 of CIFAR-10's 50,000 images = 8 % + 2 %).
    """
    if cfg.factory:
        return load_problem_factory(cfg.factory)
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
