"""Job start-up (issue 13): a stage imports only what it needs. The evaluate stage never imports
Torch-Pruning; the stages that prune import it without timm and torchvision (harness._startup)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded(code: str) -> dict[str, bool]:
    """Which heavy packages are in sys.modules after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in " \
                   "('torch_pruning', 'timm', 'torchvision', 'pandas', 'matplotlib', 'torch_geometric')}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_evaluate_stage_imports_no_pruning_library() -> None:
    loaded = _loaded("import harness.cli.evaluate\n"
                     "from harness.prune import PruningPlan, check_budget, load_pruned\n"
                     "from harness.prune.unstructured import from_meta, sparse_complexity\n"
                     "from harness.metrics import complexity, topk_accuracy\nfrom harness.data import build_splits")
    assert not any(loaded.values()), loaded


def test_pruning_a_model_imports_torch_pruning_without_timm_or_torchvision() -> None:
    loaded = _loaded("import torch, harness.cli.finetune\nfrom harness.models.cifar_resnet import CifarResNet\n"
                     "from harness.prune import apply_plan\n"
                     "m = CifarResNet(8, 10, 3, width=0.5).eval()\n"
                     "apply_plan(m, {'layer1.0.conv1': [0, 1, 2]}, torch.zeros(1, 3, 16, 16))\n"
                     "assert m.layer1[0].conv1.out_channels == 3")
    assert loaded["torch_pruning"] and not loaded["timm"] and not loaded["torchvision"], loaded


def test_timm_still_imports_and_keeps_torch_pruning_s_table_when_loaded_first() -> None:
    loaded = _loaded("import harness, timm\nimport torch_pruning.utils.op_counter as oc\nassert oc.has_timm\n"
                     "import harness.prune.groups")
    assert loaded["timm"] and loaded["torch_pruning"]
    after = _loaded("import harness, torch_pruning.utils.op_counter as oc\nassert not oc.has_timm\n"
                    "import timm\nassert timm.__version__")  # a later `import timm` works as usual
    assert after["timm"]
