"""End-to-end: a tiny synthetic run writes every artifact of a run folder, with finite metrics."""

import json
import math

import yaml


def test_smoke_run_writes_every_artifact(smoke_run):
    run_dir, result = smoke_run
    for name in ("config.yaml", "history.json", "curves.png", "misclassified.png", "gradcam.png",
                 "misclassified.json", "confusion.png", "evaluation.json", "explanations.json", "explanations.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert list((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))
    assert list((run_dir / "checkpoints").glob("best_model_*.pt"))
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    for record in history["epochs"]:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"):
            assert math.isfinite(record[key]), key
    assert result["val_accuracy"] == history["epochs"][-1]["val_accuracy"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["epochs"] == 2 and len(config["derived"]["mean"]) == 3 and len(config["derived"]["std"]) == 3
    assert config["derived"]["train_transform"][0]["name"] == "Sequential"
    import torch
    assert config["derived"]["versions"]["torch"] == torch.__version__  # what the numbers depend on, recorded
    assert config["derived"]["machine"]["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()

