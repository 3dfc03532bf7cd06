"""CI-sized quality benchmark: the trained model beats the intensity threshold and PCA on pixel AUPRC;
at each method's calibrated threshold its proposals overlap findings better than PCA's and are false
less often than the intensity threshold's.

The U-Net and plain-autoencoder comparisons are left to ``make bench``: they triple the training time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.reconstruction import _same_config, run_benchmark
from oncostruct_reconstruction.model.training import PRESETS


def test_trained_model_beats_threshold_and_pca(tmp_path: Path) -> None:
    results = run_benchmark(tmp_path, preset="ci", seed=0, train_model=True, with_networks=False)
    auprc = {name: result.overall.pixel_auprc for name, result in results.items()}
    assert auprc["model"] > auprc["threshold"]
    assert auprc["model"] > auprc["pca"]
    # The operating point: each method at the 99.99th percentile of its own normal maps.
    proposals = {name: result.proposals for name, result in results.items() if result.proposals}
    assert proposals.keys() == results.keys()
    assert proposals["model"].dice > proposals["pca"].dice
    assert proposals["model"].false_per_slice < proposals["threshold"].false_per_slice
    assert all(result.threshold is not None and result.threshold > 0 for result in results.values())
    assert (tmp_path / "figure.png").stat().st_size > 1000
    text = (tmp_path / "table.md").read_text()
    assert "| vae (trained here) |" in text
    assert "| method | threshold | false proposals / slice | proposal Dice |" in text
    recorded = json.loads((tmp_path / "results.json").read_text())["methods"]["model"]
    assert recorded["proposals"] == proposals["model"].as_dict()
    assert set(recorded["proposals_by_kind"]) == {"blob", "patch", "noise", "deformation"}


def test_a_cached_comparison_model_is_reused_only_for_the_same_training() -> None:
    config = dataclasses.replace(PRESETS["ci"], seed=3)
    recorded = json.loads(json.dumps(config.as_dict()))
    assert _same_config(recorded, config)
    older = {key: value for key, value in recorded.items() if key != "head_loss"}  # before the setting existed
    assert _same_config(older, config)
    assert not _same_config(recorded, dataclasses.replace(config, seed=4))
    assert not _same_config({key: value for key, value in recorded.items() if key != "mr_scaling"}, config)
    assert not _same_config({"network": "?"}, config)
    assert not _same_config(None, config)
