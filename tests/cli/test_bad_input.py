"""A user's mistakes get one line on stderr, exit code 2, no traceback, nothing lost.

Most commands run in this process (``support.cli``: the same click commands and error handling,
no interpreter start-up per call); ``test_invalid_fields_are_reported_at_once`` and the
divergence run go through a real ``steplines`` process, whose stderr must be that one line too.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from support import TINY, cli, copy_run, steplines


def _cli_error(args: list[str], *needles: str) -> None:
    """In-process (no interpreter start): exit 2 and one line ``error: …`` on stderr."""
    from click.testing import CliRunner

    from steplines.cli.main import main

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _one_line_error(res, *needles: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--preset", "nope"], ["unknown preset 'nope'", "demo"]),
        (["--config", "missing.toml"], ["not found"]),
    ],
)
def test_unknown_preset_and_missing_config(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    _one_line_error(cli("run", *args, "--out", str(tmp_path / "r")), *needles)


def test_invalid_fields_are_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[problem]\nmodel = "resnet99"\ncolour = 3\n[train]\nlr = -1\n'
        'optimizer = "sgdd"\n[measure]\ngrid = "hexagonal"\n'
    )
    res = steplines("run", "--config", str(cfg), "--out", str(tmp_path / "r"))
    _one_line_error(
        res,
        "problem.model",
        "resnet99",
        "problem.colour: unknown field",
        "train.lr",
        "train.optimizer",
        "sgdd",
        "measure.grid",
    )
    assert not (tmp_path / "r").exists()


def test_tf32_off_cuda_and_bf16_in_float64_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "tf32.toml"
    cfg.write_text(TINY.format(steps=3) + 'precision = "tf32"\n')
    for cmd in ("run", "train"):
        res = cli(cmd, "--config", str(cfg), "--out", str(tmp_path / "r"), "--device", "cpu")
        _one_line_error(res, "measure.precision 'tf32'", "only on CUDA GPUs", "'fp32' or 'bf16'")
    assert not (tmp_path / "r").exists()
    cfg.write_text(TINY.format(steps=3) + 'precision = "bf16"\ndtype = "float64"\n')
    res = cli("run", "--config", str(cfg), "--out", str(tmp_path / "r"))
    _one_line_error(res, "precision 'bf16'", "dtype = 'float32'")


def test_existing_run_with_other_config_is_refused_and_kept(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg, _ = tiny_run
    run = copy_run(tiny_run[1], tmp_path / "run")  # a finished run of `cfg` (10 steps)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    res = cli("run", "--config", str(cfg), "--out", str(run), "--steps", "5", "--quiet")
    _one_line_error(res, "different configuration", "train.steps: 10 -> 5", "new --out")
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    not_a_run = tmp_path / "other"
    not_a_run.mkdir()
    (not_a_run / "x.txt").write_text("mine")
    _one_line_error(cli("run", "--config", str(cfg), "--out", str(not_a_run)), "not empty")


def test_missing_and_corrupt_cifar(tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    _one_line_error(cli("run", "--preset", "paper-resnet20-sgd", "--out", out), "CIFAR-10")
    assert not Path(out).exists()  # checked before the run directory is made
    _one_line_error(
        cli(
            "run",
            "--preset",
            "paper-resnet20-sgd",
            "--out",
            out,
            "--data-dir",
            str(tmp_path / "nowhere"),
        ),
        "CIFAR-10",
    )
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    _one_line_error(
        cli(
            "run",
            "--preset",
            "paper-resnet20-sgd",
            "--out",
            out,
            "--data-dir",
            str(tmp_path / "cifar"),
        ),
        "CIFAR-10",
    )
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10})
        )
    (folder / "test_batch").write_bytes(b"\x80garbage")
    _one_line_error(
        cli(
            "run",
            "--preset",
            "paper-resnet20-sgd",
            "--out",
            out,
            "--data-dir",
            str(tmp_path / "cifar"),
        ),
        "test_batch",
    )


def test_divergence_stops_and_keeps_finished_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "div.toml"
    cfg.write_text(TINY.format(steps=40).replace("lr = 1.0", "lr = 1e20"))
    run = tmp_path / "run"
    res = cli("run", "--config", str(cfg), "--out", str(run), "--quiet")
    _one_line_error(res, "diverged at step", "lower train.lr")
    step = int(res.stderr.split("diverged at step ")[1].split()[0])
    assert 0 < step < 40
    info = cli("info", str(run), "--json", check=True)
    import json

    rec = json.loads(info.stdout)
    assert rec["diverged_at"] == step and rec["lines_done"] == step
    # rerunning repeats the message and changes nothing
    _one_line_error(
        cli("run", "--config", str(cfg), "--out", str(run), "--quiet"),
        f"diverged at step {step}",
    )


def test_tampered_checkpoint_is_a_replay_mismatch(
    tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    run = copy_run(tiny_trained[1], tmp_path / "run")  # what `steplines train` wrote
    ck = run / "trajectory" / "checkpoint_0000004.pt"
    state = torch.load(ck, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1e-3
    torch.save(state, ck)
    res = cli("measure", str(run), "--quiet")
    _one_line_error(res, "step 4", "differ from the checkpoint", "checkpoint_0000004.pt is damaged")
    info = cli("info", str(run), "--json", check=True)
    assert '"lines_done": 4' in info.stdout  # the lines of the good segment are kept
    # a truncated checkpoint or record file: one line naming it and the fix
    ck.write_bytes(ck.read_bytes()[:300])
    _cli_error(["measure", str(run), "--quiet"], "checkpoint_0000004.pt is damaged", "train")
    rec = run / "trajectory" / "steps_0000008.npz"
    rec.write_bytes(rec.read_bytes()[:100])
    _cli_error(["measure", str(run), "--redo", "9"], "steps_0000008.npz is damaged", "delete it")


@pytest.mark.parametrize(
    ("train", "needles"),
    [
        ('optimizer = "LBFGS"\n', ["train.optimizer 'LBFGS' needs a closure", "sgd, adam"]),
        (
            'optimizer = "adam"\noptimizer_kwargs = {nope = 1}\n',
            ["cannot build optimizer 'adam'", "nope", "fix train.optimizer_kwargs"],
        ),
    ],
)
def test_optimizer_errors_come_before_the_run_directory(
    tmp_path: Path, train: str, needles: list[str]
) -> None:
    from steplines.config import load_config
    from steplines.errors import ConfigError

    cfg = tmp_path / "opt.toml"
    cfg.write_text(TINY.format(steps=3).replace("[train]\n", "[train]\n" + train))
    with pytest.raises(ConfigError) as err:
        load_config(None, cfg)
    for n in needles:
        assert n in str(err.value)
    res = steplines("train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    _one_line_error(res, *needles)
    assert not (tmp_path / "r").exists()  # no stub that would refuse the corrected command


def test_optimizer_values_are_checked_before_the_run_directory(tmp_path: Path) -> None:
    """The configuration checks the names of ``optimizer_kwargs`` without building the
    optimizer; a value the optimizer refuses stops train and run before the run directory."""
    from steplines.config import load_config

    cfg = tmp_path / "opt.toml"
    train = 'optimizer = "adam"\noptimizer_kwargs = {betas = [2.0, 0.9]}\n'
    cfg.write_text(TINY.format(steps=3).replace("[train]\n", "[train]\n" + train))
    assert load_config(None, cfg).train.optimizer_kwargs == {"betas": [2.0, 0.9]}
    needles = ["cannot build optimizer 'adam'", "beta", "fix train.optimizer_kwargs"]
    for command in ("train", "run"):
        _cli_error([command, "--config", str(cfg), "--out", str(tmp_path / "r")], *needles)
        assert not (tmp_path / "r").exists()


def test_unusable_inputs_get_one_line(tmp_path: Path, tiny_config: Path) -> None:
    out = str(tmp_path / "r")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[problem]\ndataset = "digits" # caf\xe9\n')
    _cli_error(["run", "--config", str(latin1), "--out", out], "not UTF-8", "save it as UTF-8")
    _cli_error(["run", "--config", str(tmp_path), "--out", out], "is a directory")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _cli_error(["run", "--config", str(tiny_config), "--out", str(a_file)], "is a file")
    for dev in ("tpu", "cuda:abc"):
        args = ["run", "--config", str(tiny_config), "--out", out, "--device", dev]
        _cli_error(args, f"device {dev!r}", "auto, cpu, cuda or cuda:N")
    _cli_error(["lr-grid", "--config", str(tiny_config), "--lrs", "abc"], "--lrs 'abc'")
    _cli_error(["lr-grid", "--config", str(tiny_config), "--lrs", "0.1,-1"], "positive")
    _cli_error(["bench", "--batches", "0"], "--batches 0 must be at least 1")
    bool_steps = tmp_path / "bool.toml"
    bool_steps.write_text("[train]\nsteps = true\n")
    _cli_error(["run", "--config", str(bool_steps), "--out", out], "train.steps", "boolean")
    assert not Path(out).exists()


def test_measure_backend_and_its_old_spelling(tmp_path: Path) -> None:
    """``measure --backend local|ray``; ``--engine local|ray`` (the old spelling) is still
    accepted but hidden, and contradicting both is one line."""
    from click.testing import CliRunner

    from steplines.cli.main import main

    help_text = CliRunner().invoke(main, ["measure", "--help"]).output
    assert "--backend" in help_text and "--engine" not in help_text
    missing = str(tmp_path / "nothing")
    for option in ("--backend", "--engine"):
        _cli_error(["measure", missing, option, "local"], "not a steplines run directory")
    _cli_error(["measure", missing, "--backend", "ray", "--engine", "local"], "disagree")


def test_a_huge_step_count_is_refused_before_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "huge"
    _cli_error(
        ["run", "--preset", "demo", "--steps", "1000000000", "--out", str(out)],
        "train.steps",
        "10000000",
    )
    assert not out.exists()


def test_export_out_an_existing_directory_is_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    from analysis_fixtures import make_run

    run = make_run(tmp_path / "run", n_lines=2)
    adir = tmp_path / "adir"
    adir.mkdir()
    _cli_error(["export", str(run), "--to", "csv", "--out", str(adir)], "is a directory")
    assert list(adir.iterdir()) == [] and not (tmp_path / "adir.json").exists()
