"""CUDA checks (run with `pytest -m gpu` on a machine with a GPU): bf16 training without host syncs."""

from __future__ import annotations

import pytest
import torch

from mchad.config import compose
from mchad.data.augment import BatchAugment
from mchad.methods import METHODS, build_method
from mchad.nn.wrn import WideResNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("method_name", METHODS)
def test_training_step_has_no_host_synchronisation(method_name):
    """Every method's bf16 training step (augmentation, forward, loss, backward) runs without a host sync."""
    device = torch.device("cuda")
    _, method = build_method(compose([f"experiment=cifar10-{method_name}"]).method)
    method.to(device).train()
    n_embedding = method.n_embedding
    backbone = WideResNet(depth=10, widen_factor=1, drop_rate=0.0, n_outputs=n_embedding).to(
        device, memory_format=torch.channels_last
    )
    augment = BatchAugment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(device)
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, device=device)
    y = torch.cat([torch.randint(0, 10, (32,)), torch.full((32,), -1)]).to(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = method(backbone(augment(x, train=True)))
            loss = torch.stack(list(method.loss(out, y).values())).sum()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
