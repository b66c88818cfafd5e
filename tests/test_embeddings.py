"""TensorBoard extras: 2-D embedding frames per epoch, the projector, and the GIF the report makes."""

from __future__ import annotations

from PIL import Image

from mchad.cli.report import main as report_main
from mchad.train import train


def test_embedding_frames_projector_and_gif(run_config, tmp_path):
    cfg, run_dir = run_config(
        "experiment=quickstart",
        "method.n_embedding=2",
        "model.embedding_plots=true",
        "model.projector=true",
        "trainer.max_epochs=2",
        "trainer.limit_test_batches=1",
        "data.eval_batch_size=64",
        "test_checkpoint=current",
    )
    train(cfg, run_dir)
    frames = sorted((run_dir / "embeddings").glob("epoch_*.png"))
    assert [f.name for f in frames] == ["epoch_000.png", "epoch_001.png"]
    assert (run_dir / "tensorboard" / "projector_config.pbtxt").is_file()
    metadata = next((run_dir / "tensorboard").rglob("metadata.tsv")).read_text().split()
    assert {"gaussian", "uniform", "digits-ood"} <= set(metadata) and "0" in metadata

    assert report_main([str(run_dir), "--out", str(tmp_path / "report"), "--gif"]) == 0
    gif = Image.open(next((tmp_path / "report" / "embeddings").glob("*.gif")))
    assert gif.n_frames == 2
