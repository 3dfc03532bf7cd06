"""The serving side never needs torch: only training and export import it (the ``[train]`` extra)."""

from __future__ import annotations

import subprocess
import sys

SERVING_MODULES = [
    "oncostruct_reconstruction.app",
    "oncostruct_reconstruction.clients.triton",
    "oncostruct_reconstruction.triton_local",
    "oncostruct_reconstruction.model.preprocess",
    "oncostruct_reconstruction.model.scoring",
    "oncostruct_reconstruction.model.metrics",
    "oncostruct_reconstruction.model.volumes",
    "oncostruct_reconstruction.model.data",
    "oncostruct_reconstruction.model.repository",
]


def test_serving_modules_do_not_import_torch() -> None:
    code = "import sys\n" + "".join(f"import {name}\n" for name in SERVING_MODULES) + "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_training_module_help_works_without_importing_torch() -> None:
    code = (
        "import sys\nfrom oncostruct_reconstruction import train\n"
        "try:\n    train.parse_args(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "--mni152" in result.stdout
    assert result.stdout.strip().endswith("False")
