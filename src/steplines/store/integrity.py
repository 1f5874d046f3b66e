"""What makes a stored line trustworthy: the one definition that the writer, ``verify`` and
the analysis share.

* :func:`row_mean` is the only function that turns per-sample losses into a mean line: the
  store calls it when it writes a line and ``verify`` when it recomputes one, on a fresh
  C-ordered float64 copy, so the two agree bit for bit whatever the layout of the input.
* :func:`record_digest` is a CRC32 over the stored bytes of every ``[T]``/``[T, K]`` value and
  the index rows of one line, taken at write time (array ``record_checksum``, schema 4); the
  per-sample losses have their own (``checksum``).
* :func:`bad_lines` names every done line whose data the analysis must not use, and why;
  ``verify`` reports them and :func:`refuse_bad_lines` (called where the analysis opens the
  store) refuses them.

This module never imports torch.
"""

from __future__ import annotations

import shlex
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from steplines.errors import RunDirError
from steplines.store.schema import ARRAYS_BY_NAME, MEANS, SCALARS

if TYPE_CHECKING:
    from steplines.store.lines import LineStore

__all__ = [
    "DIGESTED",
    "bad_lines",
    "format_lines",
    "record_digest",
    "refuse_bad_lines",
    "row_mean",
]

DIGESTED: tuple[str, ...] = (
    "positions",
    "train_indices",
    "direction_indices",
    *MEANS.values(),
    *(name for name in SCALARS if name not in ("done",)),
)
"""The arrays whose row of line t :func:`record_digest` covers, in digest order (the
per-sample ``checksum`` included, so the two checksums chain)."""


def format_lines(lines: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5,9"``."""
    lines = sorted(lines)
    parts, i = [], 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and lines[j + 1] == lines[j] + 1:
            j += 1
        parts.append(str(lines[i]) if i == j else f"{lines[i]}-{lines[j]}")
        i = j + 1
    return ",".join(parts)


def row_mean(losses: np.ndarray) -> np.ndarray:
    """Mean over rows in float64 (NaN for zero rows, no warning): the store's mean lines.

    The input is first copied into a fresh C-ordered float64 array, so that the summation
    order (row after row, per column) never depends on the caller's memory layout: the
    writer and ``verify`` get the same bits.
    """
    losses = np.asarray(losses)
    if losses.shape[0] == 0:
        return np.full(losses.shape[1], np.nan)
    data = np.array(losses, dtype=np.float64, order="C", copy=True)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN losses are data, not errors
        return np.add.reduce(data, axis=0) / data.shape[0]


def _same_mean(stored: np.ndarray, recomputed: np.ndarray, schema: int) -> bool:
    """Bit for bit from schema 4 on (the writer calls :func:`row_mean` too). An older writer
    averaged in an order that depended on the array's memory layout (pairwise or row after
    row), which cannot be known now: there, a difference of round-off size (10⁻¹⁰ relative)
    is no damage, while a flipped or edited chunk differs by far more."""
    if schema >= 4:
        return bool(np.array_equal(stored, recomputed, equal_nan=True))
    return bool(np.allclose(stored, recomputed, rtol=1e-10, atol=1e-300, equal_nan=True))


def record_digest(values: Mapping[str, object]) -> int:
    """CRC32 of one line's stored values: each array of :data:`DIGESTED` that ``values`` has,
    as its store dtype's C-ordered bytes, in that order."""
    crc = 0
    for name in DIGESTED:
        if name not in values:
            continue
        arr = np.ascontiguousarray(values[name], dtype=ARRAYS_BY_NAME[name].np_dtype)
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(arr.tobytes(), crc)
    return crc


_NEVER_FILL = ("grad_norm", "lr", "batch_loss", "checksum", "record_checksum")
"""Scalars that a done line always has (never their fill value)."""


def _is_fill(name: str, value: np.ndarray) -> bool:
    fill = ARRAYS_BY_NAME[name].fill
    value = np.asarray(value)
    if isinstance(fill, float) and np.isnan(fill):
        return bool(np.isnan(value).all())
    return bool((value == fill).all())


def _structure(row: Mapping[str, np.ndarray], n_positions: int) -> str | None:
    """What is wrong with the summary values of one done line (None: nothing)."""
    k = int(row["n_positions"])
    pos = np.asarray(row["positions"])
    if not (0 < k <= n_positions):
        return f"n_positions {k} out of range"
    if not np.isfinite(pos[:k]).all() or np.any(np.diff(pos[:k]) < 0):
        return "positions not finite and sorted"
    if not np.isnan(pos[k:]).all():
        return "positions beyond n_positions are not NaN"
    z, u = int(row["zero_index"]), int(row["update_index"])
    if not (0 <= z < k and 0 <= u < k) or pos[z] != 0.0:
        return "zero_index/update_index: s = 0 or s_update column missing"
    if pos[u] != row["s_update"]:
        return "s_update does not match its position"
    if int(row["n_passes"]) < 1:
        return "n_passes missing"
    for name in MEANS.values():
        mean = np.asarray(row[name])
        if not np.isnan(mean[k:]).all():
            return f"{name} beyond n_positions is not NaN"
    return None


def val_indices_digest(val_indices: np.ndarray) -> int:
    """CRC32 of the int64 bytes of ``val_indices`` (group attribute ``val_indices_crc32``)."""
    return zlib.crc32(np.ascontiguousarray(val_indices, dtype=np.int64).tobytes())


def _val_indices_ok(store: LineStore) -> str | None:
    """Why the store's ``val_indices`` cannot be trusted (None: fine): they must decode and,
    in stores of schema ≥ 4, match the CRC taken at creation."""
    try:
        got = store.val_indices
    except Exception as exc:  # a damaged chunk
        return f"val_indices: chunk cannot be decoded ({type(exc).__name__})"
    want = store.val_indices_crc32
    if want is not None and val_indices_digest(got) != want:
        return "val_indices: differ from the checksum taken at creation"
    return None


def bad_lines(
    store: LineStore,
    *,
    deep: bool = False,
    estimators: bool = False,
    lines: Iterable[int] | None = None,
) -> dict[int, str]:
    """Every done line whose stored data cannot be trusted: ``{t: "array: why"}``.

    Checks, for each done line: the chunks of its ``[T]``/``[T, K]`` arrays decode, its values
    are consistent (positions, columns of 0 and s_update, padding), its index rows decode,
    and (schema ≥ 4) everything matches the ``record_checksum`` taken at write time; the
    ``val_indices`` of the store. With ``deep`` also its per-sample chunks (their checksum,
    finite losses at s = 0, and its mean lines are :func:`row_mean` of them, recomputed).

    Args:
        store: the line store.
        deep: also read the per-sample losses (``verify``; the analysis reads summaries).
        estimators: the run computed estimator inputs: ``est_slope_update``/``est_curvature``
            must be set on lines with ``s_update ≠ 0``.
        lines: only these lines (default: every done line).
    """
    out: dict[int, str] = {}
    for name, ranges in store.damaged_chunks().items():
        for a, b in ranges:
            for t in range(a, b):
                out.setdefault(t, f"{name}: chunk cannot be decoded")
    summary = store.read_summary(tolerant=True)
    done = np.asarray(summary["done"], dtype=bool)
    wanted = np.flatnonzero(done) if lines is None else [t for t in lines if done[t]]
    val_why = _val_indices_ok(store)
    has_digest = store.has_array("record_checksum")
    for t in wanted:
        t = int(t)
        if t in out:
            continue
        if val_why:
            out[t] = val_why
            continue
        try:
            why = _check_line(store, t, summary, deep, estimators, has_digest)
        except Exception as exc:  # anything unreadable is untrustworthy, never a traceback
            why = f"unreadable ({type(exc).__name__})"
        if why:
            out[t] = why
    return dict(sorted(out.items()))


def _check_line(
    store: LineStore,
    t: int,
    summary: Mapping[str, np.ndarray],
    deep: bool,
    estimators: bool,
    has_digest: bool,
) -> str | None:
    """What is wrong with done line ``t`` (None: nothing), the first of: its index rows do not
    decode, its summary values are inconsistent (:func:`_structure`), (``deep``) its per-sample
    losses, a scalar reads as unwritten, (``has_digest``) its ``record_checksum``,
    (``estimators``) its estimator inputs."""
    row: dict[str, np.ndarray] = {name: summary[name][t] for name in summary}
    if (why := _read_index_rows(store, t, row)) is not None:
        return why
    if (why := _structure(row, store.n_positions)) is not None:
        return why
    # a negative id is "unknown" (a LineProbe whose batches carry no data-set ids; the row
    # bootstrap then resamples by row position), not damage
    if deep and (why := _check_per_sample(store, t, row)) is not None:
        return why
    if (why := _check_unwritten(store, row)) is not None:
        return why
    if has_digest and (why := _check_digest(store, row)) is not None:
        return why
    if estimators and (why := _check_estimator_inputs(store, row)) is not None:
        return why
    return None


def _read_index_rows(store: LineStore, t: int, row: dict[str, np.ndarray]) -> str | None:
    """Add line ``t``'s ``train_indices`` and ``direction_indices`` to ``row``; why not
    (None: both decode)."""
    for name in ("train_indices", "direction_indices"):
        try:
            row[name] = store.read_row(name, t)
        except Exception:
            return f"{name}: chunk cannot be decoded"
    return None


def _check_per_sample(store: LineStore, t: int, row: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with line ``t``'s per-sample losses (None: nothing): their chunks match
    their checksum, they are finite at s = 0 and the stored mean lines are their
    :func:`row_mean`."""
    if not store.verify_line(t):
        return "per-sample losses: checksum mismatch or undecodable chunk"
    line = store.read_line(t, verify=False)
    z, k = int(row["zero_index"]), int(row["n_positions"])
    for name, mean_name in MEANS.items():
        losses = getattr(line, name)
        if not np.isfinite(losses[:, z]).all():
            return f"{name} not finite at s = 0"
        if not _same_mean(row[mean_name][:k], row_mean(losses), store.schema_version):
            return f"{mean_name} does not match the per-sample losses"
    return None


def _check_unwritten(store: LineStore, row: Mapping[str, np.ndarray]) -> str | None:
    """Which scalar of :data:`_NEVER_FILL` reads as its fill value in ``row``, i.e. as never
    written (a lost chunk); None: none does."""
    for name in _NEVER_FILL:
        if store.has_array(name) and _is_fill(name, row[name]):
            return f"{name}: reads as unwritten (chunk lost?)"
    return None


def _check_digest(store: LineStore, row: Mapping[str, np.ndarray]) -> str | None:
    """Whether ``row`` is what was written: its :func:`record_digest` must equal its
    ``record_checksum`` (None: it does)."""
    present = {name: row[name] for name in DIGESTED if store.has_array(name)}
    if record_digest(present) != int(row["record_checksum"]):
        return "record_checksum: positions, means, indices or scalars differ from what was written"
    return None


def _check_estimator_inputs(store: LineStore, row: Mapping[str, np.ndarray]) -> str | None:
    """Which estimator input (``est_slope_update``, ``est_curvature``) a line with
    ``s_update ≠ 0`` lacks (None: none, or the store has no estimator inputs)."""
    if store.has_estimator_inputs and float(row["s_update"]) != 0.0:
        for name in ("est_slope_update", "est_curvature"):
            if np.isnan(row[name]):
                return f"{name} missing"
    return None


def refuse_bad_lines(store: LineStore, estimators: bool = False) -> None:
    """Raise a one-line :class:`RunDirError` naming the lines the analysis must not use, the
    array and the ``steplines measure --redo`` that repairs them; return if every done line is
    sound."""
    bad = bad_lines(store, estimators=estimators)
    if not bad:
        return
    first = next(iter(bad))
    run = shlex.quote(str(store.path.parent))
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise RunDirError(
        f"{store.path}: line {first} cannot be trusted ({bad[first]}){more}; "
        f"repair with: steplines measure {run} --redo {format_lines(bad)}, then "
        f"steplines verify {run}"
    )
