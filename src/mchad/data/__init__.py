"""Data: the data set registry, checksummed downloads, the uint8 tensor cache, the data module
and batched on-device augmentation. Import from the submodules, e.g.
``from mchad.data.registry import load_dataset`` or ``from mchad.data.datamodule import OODDataModule``."""
