"""Run configuration: one TOML file, validated by pydantic, frozen.

A run is fully described by :class:`RunConfig` (problem, training, measurement). The resolved
configuration is written to ``RUN/config.toml``; named presets live in ``steplines/presets``.
Every invalid or unknown field is reported at once, in one line, by :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATASETS = ("digits", "cifar10", "fashion-mnist")
# Training images a data set gives when ``problem.train_size`` is not set (``make_problem``).
DEFAULT_TRAIN_SIZES = {"digits": 1280, "cifar10": 4000, "fashion-mnist": 4800}
FULL_BATCH_MODES = ("epoch", "fixed")
SAMPLE_PREFIX = "sample:"
MODELS = ("digits-resnet", "resnet20", "resnet18", "mobilenetv2", "mlp-bn")
# torch.optim classes selectable by lower-case name (any other class name of torch.optim works too).
OPTIMIZER_ALIASES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}


def _allows_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_allows_bool(a) for a in get_args(annotation))


def _torch_checks(info: ValidationInfo) -> bool:
    """Whether this validation makes the checks that import torch (see validate_config)."""
    return bool((info.context or {}).get("torch_checks", True))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic would take `steps = true` as 1: a boolean only where one is meant
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and not _allows_bool(field.annotation):
            raise ValueError(f"expected a number or text, got the boolean {str(v).lower()}")
        return v


class ProblemConfig(_Section):
    """What is trained: data set, model, subset sizes and augmentation.

    ``train_size``/``val_size`` default per data set: digits 1280/517 (fixed seeded split of the
    1,797 images), CIFAR-10 4000/1000 (the paper's 8 % subset, docs/method.md §1.1), Fashion-MNIST
    4800/1200 (8 % and 2 % of its 60,000 training images, the same protocol).

    ``factory``: ``"module:function"`` or ``"path/to/file.py:function"``, a user's function
    that takes no arguments and returns a :class:`steplines.Problem` (data, model, per-sample
    loss, batch size); the other fields of this table are then not used.
    """

    dataset: Literal["digits", "cifar10", "fashion-mnist", "custom"] = "digits"
    model: str = "digits-resnet"
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = Field(default=None, gt=0)
    val_size: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=128, gt=0)
    augment: bool = True
    split_seed: int = 42
    factory: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_when_factory(cls, data: Any) -> Any:
        # a user's problem brings its own data and model: say so instead of the defaults
        if isinstance(data, dict) and data.get("factory"):
            data = {"dataset": "custom", "model": "custom", **data}
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in (*MODELS, "custom"):
            raise ValueError(f"unknown model {v!r} (choose one of {', '.join(MODELS)})")
        return v


MAX_STEPS = 10_000_000
"""Most training steps a run may have: every line is preallocated in the stores, and a
larger count is a typo that would fill memory before the first step."""


class TrainConfig(_Section):
    """How the trajectory is produced: optimizer, schedule, steps, seed, checkpoints.

    ``cpu_threads``: torch threads for every computation of the run on CPU (training, replay,
    measurement). CPU results depend on it in the last bits, and replays must be bitwise, so it
    is fixed per run: None = torch's default at the first training, recorded in
    ``trajectory/meta.json``. Set 1 to run several shards side by side on one machine.
    """

    optimizer: str = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    milestones: tuple[int, ...] = ()
    gamma: float = Field(default=0.1, gt=0)
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    steps: int = Field(default=100, gt=0, le=MAX_STEPS)
    seed: int = 1
    checkpoint_every: int = Field(default=100, gt=0)
    cpu_threads: int | None = Field(default=None, ge=1)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str, info: ValidationInfo) -> str:
        if not _torch_checks(info):
            return v
        import torch.optim

        name = OPTIMIZER_ALIASES.get(v.lower(), v)
        cls_ = getattr(torch.optim, name, None)
        if not (isinstance(cls_, type) and issubclass(cls_, torch.optim.Optimizer)):
            raise ValueError(
                f"unknown optimizer {v!r} (use a torch.optim class name, e.g. sgd, adam, adamw)"
            )
        return v

    def optimizer_call(self) -> tuple[str, dict[str, Any]]:
        """The ``torch.optim`` class name and the keyword arguments the optimizer is built with
        (:func:`steplines.trajectory.loop.make_optimizer`): ``lr``; SGD also ``momentum`` and
        ``weight_decay``, another class ``weight_decay`` when it is set; then
        ``optimizer_kwargs``, which override them."""
        name = OPTIMIZER_ALIASES.get(self.optimizer.lower(), self.optimizer)
        kwargs: dict[str, Any] = {"lr": self.lr}
        if name == "SGD":
            kwargs.update(momentum=self.momentum, weight_decay=self.weight_decay)
        elif self.weight_decay:
            kwargs["weight_decay"] = self.weight_decay
        kwargs.update(self.optimizer_kwargs)
        return name, kwargs

    @model_validator(mode="after")
    def _optimizer_takes_its_kwargs(self, info: ValidationInfo) -> TrainConfig:
        # the optimizer's constructor must accept every keyword it will get, so that a bad
        # name in optimizer_kwargs is reported with the other invalid fields, before anything is
        # created; checked against the signature, nothing is built (the values are checked
        # when the optimizer is built: steplines.trajectory.loop.check_optimizer)
        if not _torch_checks(info):
            return self
        import torch.optim

        name, kwargs = self.optimizer_call()
        cls_ = getattr(torch.optim, name, None)
        if not isinstance(cls_, type):
            return self  # an unknown optimizer: reported by _known_optimizer
        try:
            inspect.signature(cls_).bind([], **kwargs)
        except TypeError as err:
            raise ValueError(optimizer_error(self.optimizer, kwargs, err)) from None
        return self

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m <= 0 for m in v) or list(v) != sorted(v):
            raise ValueError("milestones must be positive step indices in ascending order")
        return v


class MeasureConfig(_Section):
    """How every line is measured (docs/method.md §3.3–§3.6, with the bugs of §9 fixed).

    ``engine``, ``device``, ``max_eval_batch``, ``compile``, ``memory_budget_mb``, ``workers``
    and ``precision_check_every`` say how fast a line is computed, not what it is: they are
    the :class:`EngineConfig` (:meth:`EngineConfig.from_measure`), and a run may resume with
    other values.

    Attributes:
        grid: ``paper`` — both halves of ``arange`` with ``resolution`` on
            [−interval, interval) plus 0 and s_update (docs/method.md §3.3); ``symmetric`` —
            k·resolution for |k·resolution| ≤ interval, plus s_update.
        max_passes: passes of interval enlargement (rings of width ``interval``), 1 = none.
        full_batch: ``epoch`` — a fresh augmented ``drop_last`` epoch per line (paper);
            ``fixed`` — the whole un-augmented training set, the same for every line;
            ``sample:n`` — a fresh random subset of n training samples per line, augmented and
            grouped into BatchNorm batches of the run's batch size like ``epoch`` (it is the
            first n/B batches of the epoch ``epoch`` would draw), so a line costs n rows, not
            the whole training set. n must be a multiple of the batch size and at most the
            training set's size (:func:`sample_size`).
        batchnorm: ``batch`` — train-mode statistics of each fixed evaluation batch (paper);
            ``running`` — eval mode with the running statistics of θ_t.
        dropout: ``fixed`` — one mask per batch per line (paper); ``off``.
        engine: ``auto`` (fast), ``fast`` or ``reference`` (slow, obvious; the test oracle).
        noisy_every: at every ``noisy_every``-th step also measure ``noisy_directions`` lines
            from θ_t along the gradients of other mini-batches (docs/method.md §5, Fig. 8); 0 = off.
        max_eval_batch: samples per forward call of the fast engine; None = chosen per
            device (``engine.fast.default_per_call``, BENCHMARKS.md).
        compile: ``torch.compile`` the fast engine's forward: ``auto`` (on CPU when a line's
            pass costs ≥ 10¹² FLOP, e.g. ResNet-20 on CIFAR; never with active dropout),
            ``on`` or ``off``.
        memory_budget_mb: bound on the activation memory of one forward call of the fast
            engine (MiB); lowers the samples per call when they would not fit.
        workers: single-threaded processes that share each line's positions on CPU:
            ``auto`` (the run's CPU threads, for lines of ≥ 10¹⁰ FLOP per pass, in
            ``steplines run``/``measure`` without Ray; LineProbe and Ray tasks stay in one
            process unless given a number), or a number (1 = in-process, with the run's
            threads).
        estimators: also compute, per line, the inputs of the cheap estimators the analysis
            compares with the measured line (direction-batch slope at θ_{t+1}, dᵀHd by a
            Hessian-vector product; ``docs/analysis.md``): 3 forward and ~4 backward passes of
            one batch per line.
        noise_scale_every: with ``estimators``, every ``noise_scale_every``-th line (t ≡ 0)
            also gets per-sample gradients of its direction batch for the gradient noise scale
            B_simple (B extra backward passes); 0 = off.
        precision: arithmetic of the fast engine's forward passes: ``fp32`` (default, the
            oracle; TF32 off), ``tf32`` (CUDA only: TF32 matmuls and convolutions, inputs
            rounded to 10 mantissa bits) or ``bf16`` (``torch.autocast`` to bfloat16, 7
            mantissa bits; needs ``dtype = "float32"``; ``steplines.engine.precision``). The
            positions, training, the reference engine and the estimators stay in ``dtype``.
        precision_check_every: with ``precision`` other than fp32, the first line each
            measuring process measures and every ``precision_check_every``-th after it is
            measured again in fp32 and the difference appended to
            ``RUN/precision_checks.jsonl``.
    """

    grid: Literal["paper", "symmetric"] = "paper"
    interval: float = Field(default=0.5, gt=0)
    resolution: float = Field(default=0.006, gt=0)
    max_passes: int = Field(default=5, ge=1, le=50)
    full_batch: str = "epoch"
    batchnorm: Literal["batch", "running"] = "batch"
    dropout: Literal["fixed", "off"] = "fixed"
    engine: Literal["auto", "fast", "reference"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "auto"
    max_eval_batch: int | None = Field(default=None, gt=0)
    compile: Literal["auto", "on", "off"] = "auto"
    memory_budget_mb: float = Field(default=4096, gt=0)
    workers: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    noisy_every: int = Field(default=0, ge=0)
    noisy_directions: int = Field(default=31, ge=2)
    estimators: bool = True
    noise_scale_every: int = Field(default=10, ge=0)
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    precision_check_every: int = Field(default=50, ge=1)

    @field_validator("full_batch")
    @classmethod
    def _known_full_batch(cls, v: str) -> str:
        sample_size(v)  # raises ValueError naming the accepted forms
        return v

    @model_validator(mode="after")
    def _grid_not_too_fine(self) -> MeasureConfig:
        if self.interval / self.resolution > 100_000:
            raise ValueError("interval/resolution gives more than 100,000 positions per side")
        return self

    @model_validator(mode="after")
    def _precision_fits(self) -> MeasureConfig:
        if self.precision == "fp32":
            return self
        if self.dtype != "float32":
            raise ValueError(
                f"precision {self.precision!r} lowers float32 arithmetic; it needs "
                "dtype = 'float32' (or use precision = 'fp32')"
            )
        if self.engine == "reference":
            raise ValueError(
                f"precision {self.precision!r} applies to the fast engine; the reference "
                "engine is the fp32 oracle (use engine = 'auto' or precision = 'fp32')"
            )
        return self


class ProbeConfig(_Section):
    """Written by :class:`steplines.probe.LineProbe`: the lines come from a user's own loop.

    There is no trajectory (``steplines measure``/replay do not apply); ``[train]`` holds what
    the probe read off the optimizer at its creation (lr, momentum, weight decay of group 0).

    Attributes:
        model: class name of the user's model.
        optimizer: class name of the user's optimizer ("" when none was given).
        schedule: which steps get a line (``all``, ``every:K``, ``log:N`` or ``steps:...``).
        data: name of the user's data set.
    """

    model: str
    optimizer: str = ""
    schedule: str = "all"
    data: str = "user"


class RunConfig(_Section):
    """A whole run: ``[problem]``, ``[train]`` and ``[measure]`` tables of the TOML file.

    ``[probe]`` is present only in run directories written by a user's loop (LineProbe).
    """

    problem: ProblemConfig = Field(default_factory=ProblemConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    probe: ProbeConfig | None = None

    @model_validator(mode="after")
    def _one_gradient_per_step(self, info: ValidationInfo) -> RunConfig:
        # steplines replays steps itself; LineProbe runs in the user's loop, which may do more
        if not _torch_checks(info):
            return self
        if self.probe is None and needs_closure(self.train.optimizer):
            raise ValueError(
                f"train.optimizer {self.train.optimizer!r} needs a closure that re-evaluates "
                "the loss (several evaluations per step), which steplines does not support; "
                "use an optimizer with one gradient per step, e.g. sgd, adam, adamw"
            )
        return self

    @model_validator(mode="after")
    def _custom_needs_a_source(self) -> RunConfig:
        p = self.problem
        if (p.dataset == "custom" or p.model == "custom") and not (p.factory or self.probe):
            raise ValueError("dataset/model 'custom' need problem.factory = 'module:function'")
        return self

    @model_validator(mode="after")
    def _sample_fits(self) -> RunConfig:
        n = sample_size(self.measure.full_batch)
        if n is None or self.problem.factory:
            return self  # a user's factory brings its own batch size: checked on its data
        size = self.problem.train_size or DEFAULT_TRAIN_SIZES.get(self.problem.dataset)
        check_sample_size(n, self.problem.batch_size, size)
        return self

    def to_toml(self) -> str:
        """Return the resolved configuration as TOML (None values are left out)."""
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))

    def diff(self, other: RunConfig) -> list[str]:
        """Return ``["train.lr: 0.1 -> 0.05", ...]`` for every field that differs."""
        a, b = _flatten(self.model_dump(mode="json")), _flatten(other.model_dump(mode="json"))
        return [
            f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
        ]

    def resume_diff(self, other: RunConfig) -> list[str]:
        """The differences of :meth:`diff` that forbid resuming a run made with this
        configuration under ``other``: all but where the data lives (:class:`DataLocation`)
        and how lines are measured (:class:`EngineConfig`)."""
        free = {
            f"{c.SECTION}.{f.name}"
            for c in (DataLocation, EngineConfig)
            for f in dataclasses.fields(c)
        }
        return [d for d in self.diff(other) if d.split(":")[0] not in free]


@dataclasses.dataclass(frozen=True)
class DataLocation:
    """Where a run's data set is read from (``[problem]`` ``data_dir``, ``download``).

    Not what is trained — the same images wherever they lie — so a run may resume with other
    values (:meth:`RunConfig.resume_diff`).
    """

    data_dir: str | None
    download: bool

    SECTION: ClassVar[str] = "problem"

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DataLocation:
        """The data location of a run configuration."""
        return cls(**{f.name: getattr(cfg.problem, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How lines are measured, not what: the engine and its resources (``[measure]`` fields).

    The engine (``auto``/``fast``/``reference``), the device, the samples per forward call,
    ``torch.compile``, the memory budget per call, worker processes and how often a reduced
    precision is checked against fp32 change how fast a line is computed, never which line is
    stored (the engines agree to float32 rounding, tested), so a run may resume with other
    values (:meth:`RunConfig.resume_diff`). Each field has the meaning and default of the
    :class:`MeasureConfig` field of the same name; the configuration file keeps them there.
    What is measured — grid, policies, ``dtype``, ``precision`` — stays in
    :class:`MeasureConfig`.
    """

    engine: Literal["auto", "fast", "reference"]
    device: str
    max_eval_batch: int | None
    compile: Literal["auto", "on", "off"]
    memory_budget_mb: float
    workers: Literal["auto"] | int
    precision_check_every: int

    SECTION: ClassVar[str] = "measure"

    @classmethod
    def from_measure(cls, m: MeasureConfig) -> EngineConfig:
        """The how-fields of a ``[measure]`` table."""
        return cls(**{f.name: getattr(m, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_config(cls, cfg: RunConfig) -> EngineConfig:
        """The how-fields of a run configuration."""
        return cls.from_measure(cfg.measure)


def sample_size(full_batch: str) -> int | None:
    """n of ``full_batch = "sample:n"``; None for ``epoch`` and ``fixed``.

    Raises:
        ValueError: any other value (the message lists the accepted forms).
    """
    if full_batch in FULL_BATCH_MODES:
        return None
    text = full_batch.removeprefix(SAMPLE_PREFIX)
    if full_batch.startswith(SAMPLE_PREFIX) and text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(
        f"{full_batch!r} is not 'epoch', 'fixed' or 'sample:n' (n a positive multiple of the "
        "batch size, e.g. 'sample:2048')"
    )


def check_sample_size(n: int, batch_size: int, train_size: int | None) -> None:
    """Check ``sample:n`` against the batch size B and the training set's size.

    Raises:
        ValueError: n is larger than the training set, or not a multiple of B (the message
            names the nearest valid values).
    """
    if train_size is not None and n > train_size:
        most = (train_size // batch_size) * batch_size
        raise ValueError(
            f"measure.full_batch 'sample:{n}' asks for more than the {train_size} training images; "
            f"use at most sample:{most}, or full_batch = 'epoch'"
        )
    if n % batch_size:
        lo, hi = (n // batch_size) * batch_size, (n // batch_size + 1) * batch_size
        fits = [f"sample:{v}" for v in (lo, hi) if v and (train_size is None or v <= train_size)]
        fix = " or ".join(fits) or "full_batch = 'epoch'"
        raise ValueError(
            f"measure.full_batch 'sample:{n}' must be a multiple of the batch size {batch_size} "
            f"(BatchNorm batches of B rows, like 'epoch'); use {fix}"
        )


def optimizer_error(optimizer: str, kwargs: dict[str, Any], err: BaseException) -> str:
    """The message of an optimizer that cannot be built with ``kwargs`` (``err`` says why)."""
    return f"cannot build optimizer {optimizer!r} with {kwargs}: {err}; fix train.optimizer_kwargs"


def needs_closure(optimizer: str) -> bool:
    """Whether the ``torch.optim`` class ``optimizer`` names requires ``step(closure)``."""
    import torch.optim

    cls_ = getattr(torch.optim, OPTIMIZER_ALIASES.get(optimizer.lower(), optimizer), None)
    if cls_ is None:
        return False
    closure = inspect.signature(cls_.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "optimizer_kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)  # a whole-config check names its fields
    return f"invalid configuration in {source}: " + "; ".join(parts) + " (fix these fields)"


def validate_config(
    data: dict[str, Any], source: str = "config", *, torch_checks: bool = True
) -> RunConfig:
    """Validate a nested dict; raise :class:`ConfigError` listing every bad field in one line.

    ``torch_checks=False`` leaves out the only checks that import torch (``train.optimizer``
    names a ``torch.optim`` class that takes ``optimizer_kwargs`` and needs no closure):
    for reading a run's ``config.toml`` without torch
    (:meth:`steplines.store.run.RunLayout.read_config`), which passed them when it was written.
    """
    try:
        cfg = RunConfig.model_validate(data, context={"torch_checks": torch_checks})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    for name, value in (("train.lr", cfg.train.lr), ("measure.interval", cfg.measure.interval)):
        if not math.isfinite(value):
            raise ConfigError(f"invalid configuration in {source}: {name} must be finite")
    return cfg


PRESETS = (
    "demo",
    "fashion-mnist",
    "fashion-mnist-full",
    "fashion-mnist-cpu",
    "paper-resnet20-sgd",
    "paper-resnet20-momentum",
    "paper-resnet18-sgd",
    "paper-resnet18-momentum",
    "paper-mobilenetv2-sgd",
    "paper-mobilenetv2-momentum",
)


def preset_dict(name: str) -> dict[str, Any]:
    """Return the raw dict of a named preset; unknown names raise :class:`ConfigError`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    text = resources.files("steplines").joinpath(f"presets/{name}.toml").read_text()
    return tomllib.loads(text)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file raises :class:`ConfigError`."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give the TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML ({err}); fix its syntax") from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, values replace)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    preset: str | None = None, path: Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Resolve a configuration: preset, then TOML file, then overrides (dotted keys allowed).

    Args:
        preset: a name from :data:`PRESETS`, or None for the defaults.
        path: a TOML file whose tables override the preset.
        overrides: e.g. ``{"problem.data_dir": "/data"}``.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: unknown preset, unreadable file, or any invalid or unknown field.
    """
    data: dict[str, Any] = preset_dict(preset) if preset else {}
    source = f"preset {preset!r}" if preset else "defaults"
    if path is not None:
        data = merge(data, read_toml(path))
        source = str(path)
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate_config(data, source)


def write_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved configuration as TOML (atomically: temporary file, fsync, rename)."""
    from .atomic import write_atomic

    write_atomic(Path(path), cfg.to_toml())
