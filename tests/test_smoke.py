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


def test_shipped_smoke_run_shows_twenty_mistakes_and_their_gradcam(tmp_path):
    """`make smoke` as shipped ends with the mistakes the project is for: at least 20 on the synthetic test split
    (one image in five mixes two classes' cues), drawn, and GradCAM on them."""
    from ignite_cifar.config import make_config, read_yaml
    from ignite_cifar.training.launch import train

    result = train(make_config(read_yaml("smoke"), {"output_dir": str(tmp_path), "run_name": "smoke"}))
    run_dir = tmp_path / "smoke"
    listed = json.loads((run_dir / "misclassified.json").read_text())
    assert listed["total_misclassified"] >= 20 and listed["found"] == 20
    assert (run_dir / "misclassified.png").is_file() and (run_dir / "gradcam.png").is_file()
    final = json.loads((run_dir / "history.json").read_text())["final_test"]
    assert 0.8 < final["test_accuracy"] < 0.97  # it learned the clean images; the mixed ones stay half wrong
    assert result["epochs"] == 2
