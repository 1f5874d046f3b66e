"""Tests for the benchmark networks (Mutschler & Zell (2021), docs/method.md §2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steplines.errors import ConfigError
from steplines.problems.models import MODEL_NAMES, BasicBlockA, ShortcutA, make_model

DIGITS_PARAMS = 4_962


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    built = {name: make_model(name) for name in ("resnet20", "resnet18", "mobilenetv2")}
    built["digits-resnet"] = make_model("digits-resnet", in_channels=1, image_size=8)
    built["mlp-bn"] = make_model("mlp-bn", in_channels=1, image_size=28)
    return built


def test_model_names() -> None:
    assert MODEL_NAMES == ("resnet20", "resnet18", "mobilenetv2", "digits-resnet", "mlp-bn")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet20", 269_722),
        ("resnet18", 11_173_962),
        ("mobilenetv2", 2_236_682),
        ("digits-resnet", DIGITS_PARAMS),
        # 784·128 + 128·128 + 128·10 weights, 10 biases, 2·(128 + 128) BatchNorm affine
        ("mlp-bn", 784 * 128 + 128 * 128 + 128 * 10 + 10 + 2 * 256),
    ],
)
def test_parameter_counts(models: dict[str, nn.Module], name: str, expected: int) -> None:
    assert _num_params(models[name]) == expected


def test_resnet20_fashion_variant_parameter_count() -> None:
    # Only the stem changes: 16 * 1 * 9 weights instead of 16 * 3 * 9.
    model = make_model("resnet20", in_channels=1, image_size=28)
    assert _num_params(model) == 269_722 - 16 * 2 * 9


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet20", (2, 3, 32, 32)),
        ("resnet18", (2, 3, 32, 32)),
        ("mobilenetv2", (2, 3, 32, 32)),
        ("digits-resnet", (4, 1, 8, 8)),
        ("mlp-bn", (4, 1, 28, 28)),
    ],
)
def test_forward_shapes(models: dict[str, nn.Module], name: str, shape: tuple[int, ...]) -> None:
    model = models[name]
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 10)
    assert torch.isfinite(out).all()


def test_resnet20_fashion_forward_shape() -> None:
    torch.manual_seed(0)
    model = make_model("resnet20", in_channels=1, image_size=28)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_num_classes_is_respected() -> None:
    model = make_model("digits-resnet", in_channels=1, num_classes=3, image_size=8)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("name", "batchnorms", "dropouts"),
    [("resnet20", 19, 0), ("resnet18", 20, 0), ("mobilenetv2", 52, 1), ("digits-resnet", 5, 0)],
)
def test_layer_counts(
    models: dict[str, nn.Module], name: str, batchnorms: int, dropouts: int
) -> None:
    model = models[name]
    assert _count(model, nn.BatchNorm2d) == batchnorms
    assert _count(model, nn.Dropout) == dropouts
    if dropouts:
        (dropout,) = (m for m in model.modules() if isinstance(m, nn.Dropout))
        assert dropout.p == 0.2


def test_resnet18_keeps_maxpool(models: dict[str, nn.Module]) -> None:
    pools = [m for m in models["resnet18"].modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 1
    assert (pools[0].kernel_size, pools[0].stride, pools[0].padding) == (3, 2, 1)


def test_option_a_shortcut_is_parameter_free_and_zero_pads(models: dict[str, nn.Module]) -> None:
    shortcuts = [m for m in models["resnet20"].modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    for m in models["resnet20"].modules():
        if isinstance(m, BasicBlockA):
            assert _num_params(m.shortcut) == 0

    block = BasicBlockA(16, 32, stride=2)
    assert _num_params(block.shortcut) == 0
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 2, 2)
    assert torch.equal(out[:, :8], torch.zeros(2, 8, 2, 2))
    assert torch.equal(out[:, 24:], torch.zeros(2, 8, 2, 2))
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])


def test_option_a_requires_doubling() -> None:
    with pytest.raises(ValueError, match="option-A"):
        BasicBlockA(16, 48, stride=2)


def test_same_seed_gives_identical_parameters() -> None:
    for name in MODEL_NAMES:
        kwargs = {"in_channels": 1, "image_size": 8} if name == "digits-resnet" else {}
        torch.manual_seed(0)
        a = make_model(name, **kwargs)
        torch.manual_seed(0)
        b = make_model(name, **kwargs)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_different_seed_gives_different_parameters() -> None:
    torch.manual_seed(0)
    a = make_model("resnet20")
    torch.manual_seed(1)
    b = make_model("resnet20")
    assert not torch.equal(a.linear.weight, b.linear.weight)


def test_initialisation() -> None:
    torch.manual_seed(0)
    model = make_model("mobilenetv2")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    linear = model.classifier[1]
    assert torch.all(linear.bias == 0)
    assert 0.005 < float(linear.weight.detach().std()) < 0.015


def test_unknown_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'vgg16'; choose one of: resnet20"):
        make_model("vgg16")


def test_nonpositive_size_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        make_model("resnet20", num_classes=0)
