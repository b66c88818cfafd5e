"""Pictures of the embedding space: a 2-D scatter per epoch, and the animated GIF made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

FRAME_PATTERN = "epoch_*.png"


def embedding_scatter(
    id_z: Tensor, id_labels: Tensor, ood_z: Tensor, centers: Tensor | None = None, title: str = ""
) -> Figure:
    """Scatter of 2-D embeddings: ID samples coloured by class, OOD samples grey, centers as crosses."""
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ood = ood_z.float().cpu().numpy()
    axes.scatter(ood[:, 0], ood[:, 1], s=3, c="0.6", alpha=0.5, label="OOD")
    known = id_z.float().cpu().numpy()
    axes.scatter(known[:, 0], known[:, 1], s=3, c=id_labels.cpu().numpy(), cmap="tab10", alpha=0.7)
    if centers is not None:
        mu = centers.detach().float().cpu().numpy()
        axes.scatter(mu[:, 0], mu[:, 1], marker="x", s=80, c="black", label="centers")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return figure


def frames_to_gif(frame_dir: str | Path, out: str | Path, seconds_per_frame: float = 0.5) -> Path:
    """Join the ``epoch_*.png`` frames of ``frame_dir`` (sorted by name) into an animated GIF."""
    frames = [Image.open(p).convert("RGB") for p in sorted(Path(frame_dir).glob(FRAME_PATTERN))]
    if not frames:
        raise FileNotFoundError(f"no {FRAME_PATTERN} frames in {frame_dir}: train with model.embedding_plots=true")
    out = Path(out)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(seconds_per_frame * 1000), loop=0)
    return out


def figure_to_array(figure: Figure) -> np.ndarray:
    """The RGB pixels (H, W, 3) of a rendered figure, for TensorBoard's add_image."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3]
