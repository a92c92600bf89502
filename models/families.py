"""Backbone families: one :class:`~models.backbone.Backbone` subclass per MONAI network.

Each family removes the MONAI network's own classifier, defines its feature maps, its
depth stages (``stem``, ``stage1``..``stage4``, ``head``), the stem convolution and the
Grad-CAM layer. The ``small_input`` option gives a stem for 28-64 px inputs (3x3
convolution, stride 1, no max-pool; for a ViT a 4-voxel patch).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Pad
from torch import nn

from models.backbone import Backbone

RESNET_LAYOUTS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
VIT_SIZES = {  # hidden_size, mlp_dim, num_layers, num_heads
    "s16": (384, 1536, 12, 6),
    "b16": (768, 3072, 12, 12),
}


def _small_conv(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class ResNetBackbone(Backbone):
    """MONAI ``ResNet`` (torchvision / MedicalNet key names), depth 10, 18, 34 or 50.

    Options: ``small_input``; ``shortcut_type`` ``B`` (1x1 conv + BN, as torchvision; default) or
    ``A`` (zero-padded identity, as MedicalNet resnet18/34); ``widen_factor`` (channel multiplier).
    Downsample convolutions have no bias, as in torchvision and MedicalNet.
    """

    cam_layer = "net.layer4"
    stem_conv = "net.conv1"
    net_head_keys = ("fc.",)

    def __init__(
        self,
        name: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        depth: int,
        small_input: bool = False,
        dropout: float = 0.0,
        shortcut_type: str = "B",
        widen_factor: float = 1.0,
    ) -> None:
        from monai.networks.nets import ResNet

        block, layers = RESNET_LAYOUTS[depth]
        net = ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=3 if small_input else 7,
            conv1_t_stride=1 if small_input else 2,
            no_max_pool=small_input,
            shortcut_type=shortcut_type,
            widen_factor=widen_factor,
            num_classes=1,
            feed_forward=False,
            bias_downsample=False,
        )
        feature_dim = int(512 * widen_factor) * (4 if block == "bottleneck" else 1)
        options = {"small_input": small_input, "shortcut_type": shortcut_type, "widen_factor": widen_factor}
        super().__init__(name, net, spatial_dims, in_channels, num_classes, feature_dim, dropout, options)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.act(n.bn1(n.conv1(x)))
        if not n.no_max_pool:
            x = n.maxpool(x)
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        n = self.net
        return [
            ("stem", [n.conv1, n.bn1]),
            ("stage1", [n.layer1]),
            ("stage2", [n.layer2]),
            ("stage3", [n.layer3]),
            ("stage4", [n.layer4]),
            ("head", [self.classifier]),
        ]


class DenseNetBackbone(Backbone):
    """MONAI ``DenseNet121``; feature maps are ``relu(norm5(...))``."""

    cam_layer = "net.class_layers.relu"
    stem_conv = "net.features.conv0"
    net_head_keys = ("class_layers.out.",)

    def __init__(
        self,
        name: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        small_input: bool = False,
        dropout: float = 0.0,
    ) -> None:
        from monai.networks.nets import DenseNet121

        net = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
        net.class_layers.out = nn.Identity()
        if small_input:
            net.features.conv0 = _small_conv(spatial_dims, in_channels, net.features.conv0.out_channels)
            net.features.pool0 = nn.Identity()
        feature_dim = net.features.norm5.num_features
        super().__init__(name, net, spatial_dims, in_channels, num_classes, feature_dim, dropout,
                         {"small_input": small_input})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.class_layers.relu(self.net.features(x))

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        f = self.net.features
        return [
            ("stem", [f.conv0, f.norm0]),
            ("stage1", [f.denseblock1, f.transition1]),
            ("stage2", [f.denseblock2, f.transition2]),
            ("stage3", [f.denseblock3, f.transition3]),
            ("stage4", [f.denseblock4, f.norm5]),
            ("head", [self.classifier]),
        ]


class EfficientNetBackbone(Backbone):
    """MONAI ``EfficientNetBN`` (b0..b4), built with ``pretrained=False`` (never downloads).

    The seven MBConv stacks are grouped by resolution into four stages; the 1x1 head
    convolution belongs to the last stage.
    """

    cam_layer = "net._bn1"
    stem_conv = "net._conv_stem"
    net_head_keys = ("_fc.",)
    _STAGE_STACKS = ((0, 1), (2,), (3, 4), (5, 6))

    def __init__(
        self,
        name: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        small_input: bool = False,
        dropout: float = 0.0,
    ) -> None:
        from monai.networks.nets import EfficientNetBN

        net = EfficientNetBN(name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1)
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        if small_input:
            old = net._conv_stem
            net._conv_stem = Conv[Conv.CONV, spatial_dims](old.in_channels, old.out_channels, 3, stride=1, bias=False)
            net._conv_stem.weight.data.copy_(old.weight.data)
            net._conv_stem_padding = Pad["constantpad", spatial_dims](padding=[1] * (2 * spatial_dims), value=0.0)
        feature_dim = net._conv_head.out_channels
        super().__init__(name, net, spatial_dims, in_channels, num_classes, feature_dim, dropout,
                         {"small_input": small_input})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(n._conv_stem_padding(x))))
        x = n._blocks(x)
        return n._swish(n._bn1(n._conv_head(n._conv_head_padding(x))))

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        n = self.net
        groups: list[tuple[str, list[nn.Module]]] = [("stem", [n._conv_stem, n._bn0])]
        for i, stacks in enumerate(self._STAGE_STACKS, start=1):
            groups.append((f"stage{i}", [n._blocks[s] for s in stacks if s < len(n._blocks)]))
        groups[-1][1].extend([n._conv_head, n._bn1])
        groups.append(("head", [self.classifier]))
        return groups


class SEResNetBackbone(Backbone):
    """MONAI ``SEResNet50``."""

    cam_layer = "net.layer4"
    stem_conv = "net.layer0.conv1"
    net_head_keys = ("last_linear.",)

    def __init__(
        self,
        name: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        small_input: bool = False,
        dropout: float = 0.0,
    ) -> None:
        from monai.networks.nets import SEResNet50

        net = SEResNet50(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1, pretrained=False)
        net.last_linear = nn.Identity()
        if small_input:
            net.layer0.conv1 = _small_conv(spatial_dims, in_channels, net.layer0.conv1.out_channels)
            net.layer0.pool = nn.Identity()
        super().__init__(name, net, spatial_dims, in_channels, num_classes, 2048, dropout,
                         {"small_input": small_input})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        n = self.net
        return [
            ("stem", [n.layer0]),
            ("stage1", [n.layer1]),
            ("stage2", [n.layer2]),
            ("stage3", [n.layer3]),
            ("stage4", [n.layer4]),
            ("head", [self.classifier]),
        ]


class ViTBackbone(Backbone):
    """MONAI ``ViT`` (classification token); the pooled feature is the normalised class token.

    Options: ``img_size`` (input size the position embeddings are made for; default 224 in 2D,
    96 in 3D), ``patch_size`` (default 16, or 4 with ``small_input``). The transformer blocks
    are split into four equal stages; the final norm belongs to the last. For Grad-CAM on
    ``cam_layer`` the tokens (class token dropped) must be reshaped to the patch grid.
    """

    stem_conv = "net.patch_embedding.patch_embeddings"
    net_head_keys = ("classification_head.",)

    def __init__(
        self,
        name: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        size: str,
        small_input: bool = False,
        dropout: float = 0.0,
        img_size: int | Sequence[int] | None = None,
        patch_size: int | None = None,
    ) -> None:
        from monai.networks.nets import ViT

        hidden, mlp, layers, heads = VIT_SIZES[size]
        if img_size is None:
            img_size = 224 if spatial_dims == 2 else 96
        if patch_size is None:
            patch_size = 4 if small_input else 16
        img = tuple(img_size) if isinstance(img_size, Sequence) else (int(img_size),) * spatial_dims
        net = ViT(
            in_channels=in_channels, img_size=img, patch_size=patch_size, hidden_size=hidden, mlp_dim=mlp,
            num_layers=layers, num_heads=heads, classification=True, num_classes=1, spatial_dims=spatial_dims,
        )
        net.classification_head = nn.Identity()
        options = {"small_input": small_input, "img_size": list(img), "patch_size": patch_size}
        super().__init__(name, net, spatial_dims, in_channels, num_classes, hidden, dropout, options)
        self.cam_layer = f"net.blocks.{layers - 1}.norm1"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.patch_embedding(x)
        x = torch.cat((n.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in n.blocks:
            x = block(x)
        return n.norm(x)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        return maps[:, 0]

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        n = self.net
        blocks = list(n.blocks)
        per = -(-len(blocks) // 4)
        groups: list[tuple[str, list[nn.Module]]] = [("stem", [n.patch_embedding])]
        for i in range(4):
            groups.append((f"stage{i + 1}", blocks[i * per:(i + 1) * per]))
        groups[-1][1].append(n.norm)
        groups.append(("head", [self.classifier]))
        return groups

    def stage_extra_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"stem": [self.net.cls_token]}
