"""State dicts with exactly the key names and shapes of real pretrained files (values random).

Written from the architectures' definitions, independently of MONAI:
torchvision ``resnet18/34/50`` and ``densenet121`` (ImageNet, 1000 classes), and MedicalNet
(Tencent Med3D) 3D ResNets: ``{"state_dict": {"module.<key>": ...}}`` with the ``conv_seg``
segmentation head, shortcut A (no downsample weights: resnet18/34) or B (resnet10/50).
"""
from __future__ import annotations

import torch

RESNET_LAYOUTS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
MEDICALNET_SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B"}


class _Builder:
    def __init__(self, dims: int, seed: int, dtype: torch.dtype, counters: bool) -> None:
        self.dims = dims
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.counters = counters
        self.state: dict[str, torch.Tensor] = {}

    def _rand(self, *shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=self.gen) * 0.1).to(self.dtype)

    def conv(self, name: str, out: int, inp: int, k: int, bias: bool = False) -> None:
        fan_in = inp * k**self.dims  # scaled so that activations stay of order 1 through the network
        w = torch.randn(out, inp, *([k] * self.dims), generator=self.gen) / fan_in**0.5
        self.state[f"{name}.weight"] = w.to(self.dtype)
        if bias:
            self.state[f"{name}.bias"] = self._rand(out)

    def bn(self, name: str, c: int) -> None:
        self.state[f"{name}.weight"] = 1 + self._rand(c)
        self.state[f"{name}.bias"] = self._rand(c)
        self.state[f"{name}.running_mean"] = self._rand(c)
        self.state[f"{name}.running_var"] = (0.5 + torch.rand(c, generator=self.gen)).to(self.dtype)
        if self.counters:
            self.state[f"{name}.num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)

    def resnet(self, depth: int, in_channels: int, shortcut: str) -> int:
        block, layers = RESNET_LAYOUTS[depth]
        expansion = 4 if block == "bottleneck" else 1
        self.conv("conv1", 64, in_channels, 7)
        self.bn("bn1", 64)
        inplanes = 64
        for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            for b in range(blocks):
                p = f"layer{li}.{b}"
                stride = 2 if (b == 0 and li > 1) else 1
                if block == "basic":
                    self.conv(f"{p}.conv1", planes, inplanes, 3)
                    self.bn(f"{p}.bn1", planes)
                    self.conv(f"{p}.conv2", planes, planes, 3)
                    self.bn(f"{p}.bn2", planes)
                else:
                    self.conv(f"{p}.conv1", planes, inplanes, 1)
                    self.bn(f"{p}.bn1", planes)
                    self.conv(f"{p}.conv2", planes, planes, 3)
                    self.bn(f"{p}.bn2", planes)
                    self.conv(f"{p}.conv3", planes * 4, planes, 1)
                    self.bn(f"{p}.bn3", planes * 4)
                if b == 0 and (stride != 1 or inplanes != planes * expansion) and shortcut == "B":
                    self.conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                    self.bn(f"{p}.downsample.1", planes * expansion)
                inplanes = planes * expansion
        return inplanes


def torchvision_resnet(depth: int, seed: int = 0, counters: bool = True) -> dict[str, torch.Tensor]:
    """torchvision ``resnet{depth}`` ImageNet state dict (``conv1`` ... ``layer4`` ..., ``fc``)."""
    b = _Builder(2, seed, torch.float32, counters)
    features = b.resnet(depth, 3, "B")
    b.state["fc.weight"] = b._rand(1000, features)
    b.state["fc.bias"] = b._rand(1000)
    return b.state


def torchvision_densenet121(seed: int = 0, old_style: bool = False, counters: bool = True) -> dict[str, torch.Tensor]:
    """torchvision ``densenet121`` state dict; ``old_style`` names layers ``norm.1`` as the released file does."""
    b = _Builder(2, seed, torch.float32, counters)
    growth, bn_size, features = 32, 4, 64
    b.conv("features.conv0", 64, 3, 7)
    b.bn("features.norm0", 64)
    for i, layers in enumerate((6, 12, 24, 16), start=1):
        for j in range(layers):
            p = f"features.denseblock{i}.denselayer{j + 1}"
            sep = "." if old_style else ""
            b.bn(f"{p}.norm{sep}1", features + j * growth)
            b.conv(f"{p}.conv{sep}1", bn_size * growth, features + j * growth, 1)
            b.bn(f"{p}.norm{sep}2", bn_size * growth)
            b.conv(f"{p}.conv{sep}2", growth, bn_size * growth, 3)
        features += layers * growth
        if i != 4:
            b.bn(f"features.transition{i}.norm", features)
            b.conv(f"features.transition{i}.conv", features // 2, features, 1)
            features //= 2
    b.bn("features.norm5", features)
    b.state["classifier.weight"] = b._rand(1000, features)
    b.state["classifier.bias"] = b._rand(1000)
    return b.state


def medicalnet_resnet(depth: int, seed: int = 0, counters: bool = True,
                      dtype: torch.dtype = torch.float32) -> dict[str, object]:
    """A MedicalNet checkpoint: ``{"state_dict": {"module.conv1.weight": ...}}`` with ``conv_seg``."""
    b = _Builder(3, seed, dtype, counters)
    features = b.resnet(depth, 1, MEDICALNET_SHORTCUT[depth])
    b.state["conv_seg.0.weight"] = b._rand(features, 32, 2, 2, 2)  # ConvTranspose3d(features, 32, 2)
    b.state["conv_seg.0.bias"] = b._rand(32)
    b.bn("conv_seg.1", 32)
    b.conv("conv_seg.3", 32, 32, 3)
    b.bn("conv_seg.4", 32)
    b.conv("conv_seg.6", 2, 32, 1)
    return {"state_dict": {f"module.{k}": v for k, v in b.state.items()}}


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
