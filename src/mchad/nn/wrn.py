"""Wide residual network for 32 x 32 images, in the layout of Hendrycks' checkpoints.

WRN-d-k (Zagoruyko & Komodakis, *Wide Residual Networks*, BMVC 2016) has
``n = (d - 4) / 6`` pre-activation blocks in each of three groups of widths
``16k, 32k, 64k`` (the second and third group halve the resolution):

    block(x)  = shortcut(x) + conv3x3(dropout(relu(bn(conv3x3(relu(bn(x)))))))
    shortcut  = identity when the width is unchanged, else conv1x1 of relu(bn(x))
    f(x)      = fc(avgpool(relu(bn(group3(group2(group1(conv3x3(x))))))))

Module and parameter names follow Hendrycks' implementation (``conv1``,
``block1.layer.0.bn1``, ..., ``convShortcut``, ``bn1``, ``fc``; also
``pytorch_ood.model.WideResNet``), so ``imagenet_wrn_baseline_epoch_99.pt`` of the
pre-training release (Hendrycks et al., *Using Pre-Training Can Improve Model
Robustness and Uncertainty*, ICML 2019) loads with :func:`load_pretrained`.
Here ``fc`` maps to the method's embedding of ``n_outputs`` dimensions.

Backbone configs: ``config/backbone/wrn40-2.yaml`` is the paper's WRN-40-2;
``config/backbone/wrn-small.yaml`` (WRN-10-1, no dropout) is only for CPU demos
and tests and cannot load the WRN-40-2 checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mchad.errors import ConfigError

log = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """Pre-activation residual block; see the module docstring."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut = (
            nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
            if in_planes != out_planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        # Hendrycks' block: a projection shortcut taps the activated input, the identity the raw one
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class BlockGroup(nn.Module):
    """``n_blocks`` blocks of one width; only the first changes width and stride."""

    def __init__(self, n_blocks: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n_blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` mapping (B, 3, 32, 32) images to (B, ``n_outputs``) embeddings.

    Args:
        depth: total depth ``d``; ``(d - 4)`` must be a positive multiple of 6 (10, 16, 28, 40, ...).
        widen_factor: width multiplier ``k`` (the group widths are 16k, 32k, 64k).
        drop_rate: dropout probability between the two convolutions of each block.
        n_outputs: dimension of the output (the method's embedding).
    """

    def __init__(self, depth: int = 40, widen_factor: int = 2, drop_rate: float = 0.3, n_outputs: int = 16) -> None:
        super().__init__()
        if int(depth) < 10 or (int(depth) - 4) % 6 != 0:
            raise ConfigError(
                f"backbone.depth={depth} is invalid: a WideResNet needs depth = 6n + 4 with n >= 1 (10, 16, 28, 40, ...)"
            )
        if int(widen_factor) < 1:
            raise ConfigError(
                f"backbone.widen_factor={widen_factor} is invalid: set it to a positive integer (2 for WRN-40-2)"
            )
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ConfigError(f"backbone.drop_rate={drop_rate} is invalid: set it to a probability in [0, 1)")
        if int(n_outputs) < 1:
            raise ConfigError(
                f"backbone.n_outputs={n_outputs} is invalid: set method.n_embedding to a positive integer"
            )
        self.depth, self.widen_factor = int(depth), int(widen_factor)
        n_blocks = (self.depth - 4) // 6
        widths = (16, 16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
        self.n_features = widths[3]

        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = BlockGroup(n_blocks, widths[0], widths[1], 1, float(drop_rate))
        self.block2 = BlockGroup(n_blocks, widths[1], widths[2], 2, float(drop_rate))
        self.block3 = BlockGroup(n_blocks, widths[2], widths[3], 2, float(drop_rate))
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], int(n_outputs))

        # the initialisation of the WRN paper: He-normal over fan-out, unit BN scale, zero biases
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def feature_maps(self, x: Tensor) -> Tensor:
        """The last activations before pooling, (B, 64 * widen_factor, 8, 8) for 32 x 32 images."""
        return self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features: globally average-pooled :meth:`feature_maps`, (B, 64 * widen_factor)."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Embedding ``fc(features(x))``, (B, n_outputs)."""
        return self.fc(self.features(x))


def check_pretrained(path: str | os.PathLike) -> Path:
    """``path`` if it is a file, else a ConfigError saying where the pre-trained weights come from."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.pretrained_checkpoint={path} does not exist: download imagenet_wrn_baseline_epoch_99.pt "
            "of Hendrycks' pre-training release there or set model.pretrained_checkpoint=null"
        )
    return path


def load_pretrained(model: WideResNet, path: str | os.PathLike) -> list[str]:
    """Copy the weights of a Hendrycks-layout checkpoint into ``model``; return the keys left as initialised.

    The checkpoint is a state dict, or a dict holding one under ``"state_dict"``;
    a ``"module."`` prefix (``nn.DataParallel``) is stripped. Every tensor is
    copied except the final ``fc``, which keeps its fresh initialisation when its
    shape differs (e.g. 1000 ImageNet classes vs. a 16-dimensional embedding).
    BatchNorm's ``num_batches_tracked``, absent from old checkpoints, may be missing
    (it only matters for BatchNorm with ``momentum=None``); it is not reported.

    Raises:
        ConfigError: if ``path`` does not exist or cannot be loaded with
            ``weights_only=True``, or any tensor other than ``fc`` is missing,
            unexpected or of another shape (naming the first such key).
    """
    path = check_pretrained(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file, or a pickle holding more than tensors
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"model.pretrained_checkpoint={path} cannot be loaded with weights_only=True ({reason}): "
            "save a plain state dict of tensors"
        ) from error
    state = _state_dict_of(checkpoint, path)

    own = model.state_dict()
    mismatch = _first_mismatch(own, state)
    if mismatch:
        raise ConfigError(
            f"model.pretrained_checkpoint={path} does not fit the WRN-{model.depth}-{model.widen_factor}: {mismatch}; "
            "set backbone.depth and backbone.widen_factor to the checkpoint's (imagenet_wrn_baseline_epoch_99.pt is WRN-40-2)"
        )
    fc_matches = all(key in state and state[key].shape == own[key].shape for key in ("fc.weight", "fc.bias"))
    kept = [key for key in own if key in state and (fc_matches or not key.startswith("fc."))]
    model.load_state_dict({key: state[key] for key in kept}, strict=False)
    skipped = [key for key in own if key not in kept and not key.endswith("num_batches_tracked")]
    if skipped:
        log.info("Loaded %s; kept the initial values of %s", path, ", ".join(skipped))
    return skipped


def _state_dict_of(checkpoint: object, path: Path) -> dict[str, Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ConfigError(
            f"model.pretrained_checkpoint={path} is not a state dict of tensors: "
            "save model.state_dict(), optionally under the key 'state_dict'"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _first_mismatch(own: dict[str, Tensor], state: dict[str, Tensor]) -> str | None:
    """The first tensor, other than ``fc``, that ``state`` lacks, adds or shapes differently; None if all fit."""
    for key, tensor in own.items():
        if key.startswith("fc.") or (key.endswith("num_batches_tracked") and key not in state):
            continue
        if key not in state:
            return f"it lacks {key} {tuple(tensor.shape)}"
        if state[key].shape != tensor.shape:
            return f"{key} has shape {tuple(state[key].shape)} where the backbone has {tuple(tensor.shape)}"
    extra = next((key for key in state if key not in own), None)
    return None if extra is None else f"it has {extra} {tuple(state[extra].shape)}, which the backbone lacks"
