"""WideResNet: Hendrycks' parameter layout, pytorch-ood's numbers, checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_ood.model import WideResNet as ReferenceWideResNet

from mchad.errors import ConfigError
from mchad.nn import WideResNet, load_pretrained


def reference(depth: int, widen_factor: int, num_classes: int) -> ReferenceWideResNet:
    torch.manual_seed(1)
    model = ReferenceWideResNet(num_classes=num_classes, depth=depth, widen_factor=widen_factor, drop_rate=0.3)
    # non-trivial BatchNorm statistics, so that loading them is tested too
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def test_parameter_names_and_shapes_match_pytorch_ood_wrn40_2():
    ours = WideResNet(depth=40, widen_factor=2, n_outputs=10).state_dict()
    theirs = ReferenceWideResNet(num_classes=10, depth=40, widen_factor=2).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].shape == theirs[key].shape for key in ours)
    assert "block2.layer.0.convShortcut.weight" in ours and "block1.layer.5.conv2.weight" in ours


def test_forward_shapes():
    model = WideResNet(depth=10, widen_factor=1, drop_rate=0.0, n_outputs=7)
    x = torch.randn(3, 3, 32, 32)
    assert model(x).shape == (3, 7)
    assert model.features(x).shape == (3, 64)
    assert model(x.contiguous(memory_format=torch.channels_last)).shape == (3, 7)


def test_loads_pytorch_ood_weights_with_another_fc(tmp_path):
    theirs = reference(depth=16, widen_factor=2, num_classes=10)
    path = save(theirs.state_dict(), tmp_path / "wrn.pt")
    ours = WideResNet(depth=16, widen_factor=2, n_outputs=5)
    fresh_fc = ours.fc.weight.detach().clone()

    assert load_pretrained(ours, path) == ["fc.weight", "fc.bias"]
    ours.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.features(x), theirs.features(x), atol=1e-6, rtol=0)
    assert torch.equal(ours.fc.weight, fresh_fc)


def test_loads_wrapped_prefixed_checkpoint_with_same_fc(tmp_path):
    theirs = reference(depth=10, widen_factor=2, num_classes=6)
    state = {f"module.{key}": value for key, value in theirs.state_dict().items()}
    path = save({"state_dict": state, "epoch": 99}, tmp_path / "wrn.pt")
    ours = WideResNet(depth=10, widen_factor=2, n_outputs=6)

    assert load_pretrained(ours, path) == []
    ours.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path):
    state = {k: v for k, v in reference(10, 1, 3).state_dict().items() if not k.endswith("num_batches_tracked")}
    assert load_pretrained(WideResNet(depth=10, widen_factor=1, n_outputs=3), save(state, tmp_path / "old.pt")) == []


@pytest.mark.parametrize(
    ("depth", "widen_factor", "message"),
    [
        (
            10,
            1,
            r"WRN-10-1: block1\.layer\.0\.conv1\.weight has shape \(32, 16, 3, 3\) where the backbone has \(16, 16, 3, 3\)",
        ),
        (16, 2, r"WRN-16-2: it lacks block1\.layer\.1\.bn1\.weight \(32,\)"),
    ],
)
def test_mismatched_architecture_raises(tmp_path, depth, widen_factor, message):
    path = save(reference(depth=10, widen_factor=2, num_classes=10).state_dict(), tmp_path / "wrn-10-2.pt")
    with pytest.raises(ConfigError, match=message) as error:
        load_pretrained(WideResNet(depth=depth, widen_factor=widen_factor), path)
    assert "backbone.depth and backbone.widen_factor" in str(error.value) and "\n" not in str(error.value)


def test_unexpected_key_raises(tmp_path):
    state = {**reference(10, 1, 3).state_dict(), "head.weight": torch.zeros(2)}
    with pytest.raises(ConfigError, match=r"it has head\.weight \(2,\), which the backbone lacks"):
        load_pretrained(WideResNet(depth=10, widen_factor=1), save(state, tmp_path / "extra.pt"))


def test_missing_and_unloadable_files_raise(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.pt does not exist"):
        load_pretrained(WideResNet(depth=10, widen_factor=1), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be loaded with weights_only=True"):
        load_pretrained(WideResNet(depth=10, widen_factor=1), tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="not a state dict of tensors"):
        load_pretrained(WideResNet(depth=10, widen_factor=1), save({"weights": [1, 2]}, tmp_path / "list.pt"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 41}, "backbone.depth=41"),
        ({"depth": 4}, "backbone.depth=4"),
        ({"widen_factor": 0}, "backbone.widen_factor=0"),
        ({"drop_rate": 1.0}, "backbone.drop_rate=1.0"),
        ({"n_outputs": 0}, "method.n_embedding"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        WideResNet(**kwargs)


def test_backbone_configs_instantiate(tmp_path):
    from hydra.utils import instantiate

    from mchad.config import compose

    for name, depth in (("wrn40-2", 40), ("wrn-small", 10)):
        cfg = compose([f"backbone={name}", "method.n_embedding=4", f"paths.data_dir={tmp_path}"])
        model = instantiate(cfg.model.backbone)
        assert isinstance(model, WideResNet) and model.depth == depth and model.fc.out_features == 4
    assert compose(["backbone=wrn40-2", f"paths.data_dir={tmp_path}"]).model.pretrained_checkpoint == str(
        tmp_path / "pretrained" / "imagenet_wrn_baseline_epoch_99.pt"
    )
