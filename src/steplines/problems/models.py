"""The networks of the benchmark problems (Mutschler & Zell (2021), docs/method.md §2).

Four architectures are provided, all built by :func:`make_model`:

* ``resnet20`` — the CIFAR ResNet-20 of He et al. (2016), "Deep Residual Learning for Image
  Recognition", §4.2, in Y. Idelbayev's implementation (option-A, parameter-free shortcuts;
  269,722 parameters for 3 input channels and 10 classes). With ``in_channels=1`` it is the
  Fashion-MNIST variant (1×28×28 input).
* ``resnet18`` — the CIFAR variant of ResNet-18 (He et al., 2016) from an early version of
  huyvnphan/PyTorch_CIFAR10: a 3×3 stem that keeps the max pool, and torchvision-style basic
  blocks with option-B (1×1 convolution) shortcuts (11,173,962 parameters).
* ``mobilenetv2`` — the CIFAR variant of MobileNetV2 of Sandler et al. (2018), "MobileNetV2:
  Inverted Residuals and Linear Bottlenecks", with stride-1 stem and stride-1 second stage
  (2,236,682 parameters).
* ``digits-resnet`` — a tiny residual network with BatchNorm for sklearn's 8×8 digits, built
  from the ResNet-20 blocks (4,962 parameters for 1 input channel and 10 classes).
* ``mlp-bn`` — a fully connected network with train-mode BatchNorm, two hidden layers of 128
  (118,538 parameters on 1×28×28 Fashion-MNIST): ~100× cheaper per sample than ``resnet20`` on
  a CPU, so that real-data runs of 1,000 lines fit an hour on 2 cores (the
  ``fashion-mnist-cpu`` preset).

Construction draws all initial weights from PyTorch's default global generator, so it is
deterministic given a ``torch.manual_seed`` set by the caller; nothing here seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steplines.errors import ConfigError

__all__ = ["MODEL_NAMES", "make_model"]

MODEL_NAMES: tuple[str, ...] = ("resnet20", "resnet18", "mobilenetv2", "digits-resnet", "mlp-bn")
"""The names :func:`make_model` accepts."""


# --------------------------------------------------------------------------------------------
# ResNet-20 (He et al., 2016; Idelbayev's implementation) and the digits network
# --------------------------------------------------------------------------------------------


class ShortcutA(nn.Module):
    """Option-A shortcut of He et al. (2016): subsample spatially and zero-pad channels.

    The input is subsampled with ``x[:, :, ::2, ::2]`` and its channel dimension padded with
    ``pad`` zero channels on each side. It has no parameters.

    Args:
        pad: Number of zero channels added before and after the input channels.
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the subsampled, zero-padded input."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    """Basic residual block of the CIFAR ResNets with an option-A shortcut.

    ``conv3×3(stride) → BN → ReLU → conv3×3 → BN → + shortcut → ReLU``. When the stride is not
    1 or the width changes, the shortcut is :class:`ShortcutA` with ``planes // 4`` zero
    channels on each side (so ``planes == 2 * in_planes`` is required); otherwise identity.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            if stride != 2 or in_planes + 2 * (planes // 4) != planes:
                raise ValueError(
                    f"option-A shortcut needs stride 2 and planes == 2 * in_planes, "
                    f"got {in_planes}->{planes} stride {stride}"
                )
            self.shortcut = ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetA(nn.Module):
    """CIFAR ResNet with option-A shortcuts (He et al., 2016, §4.2; Idelbayev's version).

    Stem ``conv3×3(in→w₀) → BN → ReLU``, then one stage of ``blocks_per_stage`` basic blocks
    per entry of ``widths`` (the first block of every stage but the first has stride 2),
    global average pooling and a linear classifier. Weights of every convolution and linear
    layer are drawn with ``kaiming_normal_`` (fan-in, ReLU gain); linear biases keep PyTorch's
    default; BatchNorm starts at weight 1, bias 0.

    Args:
        widths: Channels of each stage; the stem has ``widths[0]`` channels.
        blocks_per_stage: Basic blocks in each stage.
        in_channels: Input image channels.
        num_classes: Output logits.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        blocks_per_stage: tuple[int, ...],
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlockA(in_planes, width, stride))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        return self.linear(torch.flatten(self.pool(out), 1))


# --------------------------------------------------------------------------------------------
# ResNet-18, CIFAR variant (He et al., 2016; huyvnphan/PyTorch_CIFAR10, early version)
# --------------------------------------------------------------------------------------------


class BasicBlockB(nn.Module):
    """torchvision-style basic block with an option-B (1×1 convolution + BN) downsample.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution and of the downsample convolution.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32×32 images (He et al., 2016; huyvnphan/PyTorch_CIFAR10, early version).

    Stem ``conv3×3(in→64, stride 1) → BN → ReLU → MaxPool(3, stride 2, pad 1)``; four stages of
    two :class:`BasicBlockB` (widths 64/128/256/512, strides 1/2/2/2); adaptive average pool;
    ``Linear(512→num_classes)``. Convolutions use ``kaiming_normal_`` (fan-out, ReLU),
    BatchNorm starts at 1/0 and the linear layer keeps PyTorch's default initialisation.

    Args:
        in_channels: Input image channels.
        num_classes: Output logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layers: list[nn.Module] = []
        in_planes = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(BasicBlockB(in_planes, width, stride), BasicBlockB(width, width))
            )
            in_planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# MobileNetV2, CIFAR variant (Sandler et al., 2018)
# --------------------------------------------------------------------------------------------


class ConvBNReLU6(nn.Sequential):
    """``conv(k×k, no bias) → BN → ReLU6`` with ``(k - 1) // 2`` padding.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
        kernel_size: Convolution kernel size.
        stride: Convolution stride.
        groups: Convolution groups (``in_planes`` for a depthwise convolution).
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Inverted residual block with linear bottleneck (Sandler et al., 2018).

    ``[1×1 expand conv-BN-ReLU6 if expand_ratio ≠ 1] → 3×3 depthwise conv-BN-ReLU6 (stride) →
    1×1 linear conv → BN``, plus the input when ``stride == 1`` and ``in == out``.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
        stride: Stride of the depthwise convolution.
        expand_ratio: Expansion factor ``t``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_planes * expand_ratio
        self.use_res_connect = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_planes, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_planes, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.conv(x)
        return x + out if self.use_res_connect else out


_MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 1 instead of ImageNet's 2 (CIFAR)
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 for 32×32 images (Sandler et al., 2018), CIFAR variant.

    Stem ``ConvBNReLU6(in→32, stride 1)``; the inverted residual stages of Sandler et al.
    (2018, Table 2) with the second stage at stride 1; ``ConvBNReLU6(320→1280, 1×1)``; global
    mean pool; ``Dropout(0.2) → Linear(1280→num_classes)``. Convolutions use
    ``kaiming_normal_`` (fan-out), BatchNorm starts at 1/0, the linear layer at
    ``N(0, 0.01²)`` weights and zero bias.

    Args:
        in_channels: Input image channels.
        num_classes: Output logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        input_channel, last_channel = 32, 1280
        features: list[nn.Module] = [ConvBNReLU6(in_channels, input_channel, stride=1)]
        for t, c, n, s in _MOBILENETV2_SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, t))
                input_channel = c
        features.append(ConvBNReLU6(input_channel, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        x = self.features(x).mean(dim=(2, 3))
        return self.classifier(x)


class MlpBN(nn.Sequential):
    """``Flatten → [Linear(bias=False) → BatchNorm1d → ReLU] × len(widths) → Linear``.

    PyTorch's default initialisation; BatchNorm starts at 1/0. With train-mode BatchNorm its
    loss couples the samples of a batch exactly as the paper's convolutional networks do.

    Args:
        in_features: Inputs per sample (C·H·W of the images).
        widths: Hidden layer widths.
        num_classes: Output logits.
    """

    def __init__(self, in_features: int, widths: tuple[int, ...], num_classes: int) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        for width in widths:
            layers += [nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def make_model(
    name: str, *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32
) -> nn.Module:
    """Build one of the benchmark networks (Mutschler & Zell (2021), docs/method.md §2).

    Initial weights come from PyTorch's default global generator: call ``torch.manual_seed``
    first for a reproducible network. All networks end in adaptive/global pooling, so any
    ``image_size`` at least as large as the network's total downsampling works (e.g.
    ``resnet20`` on 28×28 Fashion-MNIST, ``digits-resnet`` on 8×8 digits).

    Args:
        name: One of :data:`MODEL_NAMES`.
        in_channels: Input image channels (1 for Fashion-MNIST and digits).
        num_classes: Number of output logits.
        image_size: Side length of the (square) input images; only checked to be positive.

    Returns:
        The network, in training mode, on the CPU, in ``float32``.

    Raises:
        ConfigError: If ``name`` is unknown or a size is not positive.
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    for label, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if value < 1:
            raise ConfigError(f"model {name!r}: {label} must be positive, got {value}")
    if name == "resnet20":
        return CifarResNetA((16, 32, 64), (3, 3, 3), in_channels, num_classes)
    if name == "resnet18":
        return ResNet18Cifar(in_channels, num_classes)
    if name == "mobilenetv2":
        return MobileNetV2Cifar(in_channels, num_classes)
    if name == "mlp-bn":
        return MlpBN(in_channels * image_size * image_size, (128, 128), num_classes)
    # digits-resnet: stem 1→8, one 8-channel block, one 8→16 stride-2 option-A block.
    return CifarResNetA((8, 16), (1, 1), in_channels, num_classes)
