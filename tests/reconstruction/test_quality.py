"""CI-sized quality benchmark: the trained model beats the intensity threshold and PCA on pixel AUPRC.

The U-Net and plain-autoencoder comparisons are left to ``make bench``: they triple the training time.
"""

from __future__ import annotations

from pathlib import Path

from bench.reconstruction import run_benchmark


def test_trained_model_beats_threshold_and_pca(tmp_path: Path) -> None:
    results = run_benchmark(tmp_path, preset="ci", seed=0, train_model=True, with_networks=False)
    auprc = {name: result.overall.pixel_auprc for name, result in results.items()}
    assert auprc["model"] > auprc["threshold"]
    assert auprc["model"] > auprc["pca"]
    assert (tmp_path / "figure.png").stat().st_size > 1000
    assert "| vae (trained here) |" in (tmp_path / "table.md").read_text()
