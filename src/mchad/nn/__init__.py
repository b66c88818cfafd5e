"""Backbones: the Wide ResNet and its pretrained-checkpoint loader."""

from mchad.nn.wrn import WideResNet, load_pretrained

__all__ = ["WideResNet", "load_pretrained"]
