"""The trainer end to end on tiny synthetic runs: determinism, resume, mistakes, explain/evaluate, TensorBoard."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ignite.engine import Events

from ignite_cifar import cli, files
from ignite_cifar.config import Config
from ignite_cifar.data.augment import normalize_array
from ignite_cifar.data.datasets import load_data
from ignite_cifar.errors import TrainingStopped
from ignite_cifar.explain import figures
from ignite_cifar.explain.saved_run import load_run
from ignite_cifar.model.resnet import ResNet
from ignite_cifar.training import engines
from ignite_cifar.training.launch import train
from ignite_cifar.training.resume import plan_resume

from .helpers import ASSIGNMENT_RECIPE, tiny_config

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "iteration")


def listed_n(run_dir: Path) -> int:
    return int(json.loads((Path(run_dir) / "misclassified.json").read_text())["requested"])


def _metrics(run_dir: Path) -> list[dict]:
    history = json.loads((Path(run_dir) / "history.json").read_text())
    return [{k: r[k] for k in ("epoch",) + METRICS} for r in history["epochs"]]


def test_same_seed_same_metrics(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    again = train(tiny_config(tmp_path, run_name="again", explain_at_end=False))
    assert _metrics(again["run_dir"]) == _metrics(run_dir)


def test_other_seed_other_metrics(smoke_run, tmp_path):
    other = train(tiny_config(tmp_path, run_name="other", seed=7, explain_at_end=False))
    assert _metrics(other["run_dir"]) != _metrics(smoke_run[0])


def _derived(run_dir) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["derived"]


def test_stopped_after_epoch_1_and_resumed_equals_straight_run(smoke_run, tmp_path, caplog):
    first = train(tiny_config(tmp_path, run_name="halves", epochs=1, explain_at_end=False))
    assert len(_metrics(first["run_dir"])) == 1
    with caplog.at_level("WARNING", logger="ignite_cifar"):
        assert cli.main(["train", "--resume", first["run_dir"], "--epochs", "2"]) == 0
    assert _metrics(first["run_dir"]) == _metrics(smoke_run[0])
    # the resumed run wrote into the same folder and continued its TensorBoard log
    assert len(list((Path(first["run_dir"]) / "tb").glob("events.out.tfevents.*"))) == 2
    # the same setup: no warning; config.yaml records where this start began and the one before it
    assert "another setup" not in caplog.text
    derived = _derived(first["run_dir"])
    assert derived["started_after_epoch"] == 1
    assert [s["started_after_epoch"] for s in derived["earlier_starts"]] == [0]
    assert derived["earlier_starts"][0]["machine"] == derived["machine"]


def test_a_run_resumed_on_another_machine_says_so_and_keeps_each_start(tmp_path, caplog):
    first = train(tiny_config(tmp_path, run_name="moved", epochs=1, train_subset=100, test_subset=50,
                              explain_at_end=False))
    config_path = Path(first["run_dir"]) / "config.yaml"
    saved = yaml.safe_load(config_path.read_text())
    saved["derived"]["machine"]["cpu"] = "another CPU"
    saved["derived"]["torch_threads"] = 99
    config_path.write_text(yaml.safe_dump(saved))
    with caplog.at_level("WARNING", logger="ignite_cifar"):
        assert cli.main(["train", "--resume", first["run_dir"], "--epochs", "2"]) == 0
    derived = _derived(first["run_dir"])
    assert f"machine.cpu: another CPU -> {derived['machine']['cpu']}" in caplog.text
    assert f"torch_threads: 99 -> {derived['torch_threads']}" in caplog.text
    assert derived["earlier_starts"][0]["machine"]["cpu"] == "another CPU"


def test_flags_given_with_resume_reach_the_optimizer_and_the_scheduler(tmp_path):
    first = train(tiny_config(tmp_path, run_name="relr", epochs=1, train_subset=100, test_subset=50,
                              explain_at_end=False))
    run_dir = Path(first["run_dir"])
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "3", "--lr", "0.005",
                     "--plateau-patience", "7", "--weight-decay", "0.001"]) == 0
    assert [r["lr"] for r in json.loads((run_dir / "history.json").read_text())["epochs"]] == [0.02, 0.005, 0.005]
    state = files.load_checkpoint(files.find_checkpoint(run_dir))
    group = state["optimizer"]["param_groups"][0]
    assert state["scheduler"]["patience"] == 7 and group["lr"] == 0.005 and group["weight_decay"] == 0.001
    # resumed again without --lr: the lr stays what the run has now (0.005 is its config's lr by then)
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "4"]) == 0
    assert json.loads((run_dir / "history.json").read_text())["epochs"][-1]["lr"] == 0.005


def test_every_listed_mistake_is_misclassified_by_the_saved_model(smoke_run):
    run_dir, _ = smoke_run
    listed = json.loads((run_dir / "misclassified.json").read_text())
    config, derived, model, _, _ = load_run(str(run_dir))
    test = load_data(config).test
    assert listed["found"] == len(listed["mistakes"]) == min(config.n_misclassified, listed["total_misclassified"])
    index = np.array([m["index"] for m in listed["mistakes"]])
    with torch.no_grad():
        probs = model.eval()(normalize_array(test.images[index], derived["mean"], derived["std"])).softmax(1)
    for m, p in zip(listed["mistakes"], probs, strict=True):
        assert test.labels[m["index"]] == m["true"] != m["pred"]
        assert int(p.argmax()) == m["pred"]
        assert float(p.max()) == pytest.approx(m["prob"], abs=1e-4)
    probs_listed = [m["prob"] for m in listed["mistakes"]]
    assert probs_listed == sorted(probs_listed, reverse=True)  # default order: most confident first


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    """A private copy of the shared smoke run, for tests that rewrite its files (explain, evaluate)."""
    return Path(shutil.copytree(smoke_run[0], tmp_path / "smoke"))


def test_fields_a_run_was_saved_without_are_read_back_as_the_original_recipe(smoke_copy):
    """A field missing from a run's config.yaml was added to ignite-cifar after the run was trained, which then had
    the original (assignment) recipe's behaviour for it: explain/evaluate and --resume rebuild that, not today's
    default (a weight average, the plateau on it, standardized convolutions)."""
    run_dir = smoke_copy
    saved = yaml.safe_load((run_dir / files.CONFIG_FILE).read_text())
    added_later = ("weight_standardization", "decay_norm_bias", "ema_decay", "plateau_on")
    (run_dir / files.CONFIG_FILE).write_text(yaml.safe_dump({k: v for k, v in saved.items() if k not in added_later}))
    config = load_run(str(run_dir))[0]
    resumed = plan_resume(str(run_dir), {"epochs": 3}).config
    for read_back in (config, resumed):
        assert {name: getattr(read_back, name) for name in added_later} == {name: ASSIGNMENT_RECIPE[name]
                                                                         for name in added_later}


def test_explain_draws_both_figures_from_the_same_images(smoke_copy, monkeypatch):
    run_dir = smoke_copy
    drawn = {}
    real_grid, real_cam = figures.misclassified_grid, figures.gradcam_grid

    def grid(images, mistakes, **kw):
        drawn["grid"] = ([m["index"] for m in mistakes], images.copy())
        return real_grid(images, mistakes, **kw)

    def cam(images, cam_pred, cam_true, mistakes, **kw):
        drawn["cam"] = ([m["index"] for m in mistakes], images.copy())
        assert cam_pred.shape == cam_true.shape == images.shape[:3]
        assert 0.0 <= cam_pred.min() and cam_pred.max() <= 1.0
        return real_cam(images, cam_pred, cam_true, mistakes, **kw)

    monkeypatch.setattr(figures, "misclassified_grid", grid)
    monkeypatch.setattr(figures, "gradcam_grid", cam)
    assert cli.main(["explain", "--run", str(run_dir), "--n-misclassified", "7", "--mistake-order", "first"]) == 0
    listed = json.loads((run_dir / "misclassified.json").read_text())
    indices = [m["index"] for m in listed["mistakes"]]
    assert len(indices) == 7 and indices == sorted(indices)  # `first`: dataset order
    assert drawn["grid"][0] == drawn["cam"][0] == indices
    np.testing.assert_array_equal(drawn["grid"][1], drawn["cam"][1])


def test_explain_gradcam_plus_plus_and_evaluate(smoke_copy, capsys):
    run_dir = smoke_copy
    before = (run_dir / "gradcam.png").read_bytes()
    # the short aliases of --gradcam-method and --gradcam-layer
    assert cli.main(["explain", "--run", str(run_dir), "--method", "gradcam++", "--layer", "layer3"]) == 0
    listed = json.loads((run_dir / "misclassified.json").read_text())
    assert listed["method"] == "gradcam++" and listed["layer"] == "layer3"
    assert (run_dir / "gradcam.png").read_bytes() != before  # redrawn with the other method and layer
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    trained = json.loads((run_dir / "history.json").read_text())["final_test"]  # what training wrote
    assert f"accuracy {100 * trained['test_accuracy']:.2f}%" in out
    assert "per-class accuracy" in out and "class0" in out


def test_best_checkpoint_holds_the_best_val_epoch_and_explains(smoke_copy, capsys):
    run_dir = smoke_copy
    history = json.loads((run_dir / "history.json").read_text())["epochs"]
    best = max(history, key=lambda r: r["val_accuracy"])
    (path,) = (run_dir / "checkpoints").glob("best_model_*.pt")
    assert path.name == f"best_model_{best['epoch']}_val_accuracy={best['val_accuracy']:.4f}.pt"
    assert cli.main(["explain", "--run", str(run_dir), "--explain-checkpoint", "best"]) == 0
    assert json.loads((run_dir / "misclassified.json").read_text())["model"] == path.name
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run_dir), "--which", "best"]) == 0
    assert f"checkpoint: {path}" in capsys.readouterr().out


def test_figures_have_pixels_that_vary(smoke_run):
    from PIL import Image

    for name in ("curves.png", "misclassified.png", "gradcam.png", "confusion.png"):
        pixels = np.asarray(Image.open(smoke_run[0] / name).convert("L"))
        assert pixels.std() > 10, name  # not a blank canvas


def test_evaluation_matches_the_last_val_epoch(smoke_run):
    """With val_split 0 the test split is val: the final evaluation must agree with the last epoch's."""
    run_dir, _ = smoke_run
    history = json.loads((run_dir / "history.json").read_text())
    final_test = history["final_test"]
    assert final_test["test_accuracy"] == pytest.approx(history["epochs"][-1]["val_accuracy"])
    assert final_test["test_loss"] == pytest.approx(history["epochs"][-1]["val_loss"], rel=1e-4)
    per_class = final_test["per_class_accuracy"]
    assert len(per_class) == 10 and all(0.0 <= v <= 1.0 for v in per_class.values())


def test_val_split_holds_out_train(tmp_path):
    result = train(tiny_config(tmp_path, run_name="heldout", val_split=0.2, epochs=1, explain_at_end=False))
    derived = yaml.safe_load((Path(result["run_dir"]) / "config.yaml").read_text())["derived"]
    assert derived["val_source"] == "held-out train"
    assert derived["train_images"] == 240 and derived["val_images"] == 60 and derived["test_images"] == 100


def test_plateau_scheduler_reduces_lr_and_logs_it(tmp_path, caplog):
    # lr so small that the val loss cannot improve by the relative threshold (1e-4): with patience 0 every
    # evaluation after the first reduces the lr, down to min_lr
    config = tiny_config(tmp_path, run_name="plateau", epochs=3, lr=1e-6, plateau_patience=0, plateau_factor=0.5,
                         min_lr=3e-7, explain_at_end=False)
    with caplog.at_level("INFO", logger="ignite_cifar"):
        result = train(config)
    records = json.loads((Path(result["run_dir"]) / "history.json").read_text())["epochs"]
    assert [r["lr"] for r in records] == pytest.approx([1e-6, 1e-6, 5e-7], rel=1e-9)
    assert records[-1]["next_lr"] == pytest.approx(3e-7, rel=1e-9)  # 2.5e-7 clamped to min_lr
    assert "lr 1e-06 -> 5e-07" in caplog.text


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = engines.create_trainer

    def poisoned(*args, **kwargs):
        trainer = real(*args, **kwargs)

        @trainer.on(Events.ITERATION_COMPLETED(once=9))  # epoch 2 (6 iterations per epoch)
        def poison(engine):
            engine.state.output["loss"] = torch.tensor(float("nan"))

        return trainer

    monkeypatch.setattr(engines, "create_trainer", poisoned)
    with pytest.raises(TrainingStopped, match="at iteration 9 .epoch 2.") as stopped:
        train(tiny_config(tmp_path, run_name="nan", epochs=3))
    run_dir = tmp_path / "runs" / "nan"
    kept = files.find_checkpoint(run_dir)
    assert kept is not None and kept.name == "last_checkpoint_6.pt" and str(kept) in str(stopped.value)
    assert files.load_checkpoint(kept)["trainer"]["iteration"] == 6
    assert not (run_dir / "misclassified.json").exists()  # the completion handler did not run


def test_a_loss_that_blows_up_while_finite_stops_the_run_in_one_line_whose_command_trains_it(tmp_path, capsys):
    """The default recipe (Adam, standardized convolutions) at lr 1e6: the loss stays finite (about 1e12), so the
    NaN check never fires; the blow-up check stops the run at its first read (--log-every 2), exit code 1. The
    line's command starts the run again with an lr the default recipe trains with, and it finishes."""
    code = cli.main(["train", "--dataset", "synthetic", "--width", "0.0625", "--train-subset", "300", "--test-subset",
                     "100", "--batch-size", "50", "--num-workers", "0", "--log-every", "2", "--amp", "off",
                     "--probe-every", "0", "--no-explain-at-end", "--lr", "1e6", "--epochs", "1", "--output-dir",
                     str(tmp_path)])
    err = capsys.readouterr().err.strip()
    run_dir, = tmp_path.iterdir()
    assert code == 1 and err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("ignite-cifar: the loss blew up in epoch 1: mean training loss ")
    command = f"python -m ignite_cifar train --resume {run_dir} --lr 0.001"
    assert err.endswith("by iteration 2, above 23.0 (10 x ln 10, where a fresh model starts); training stopped. Try a "
                        f"smaller lr. Last good checkpoint: none (still in epoch 1). Start it again with: {command}")
    assert cli.main(command.split()[3:]) == 0
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())["epochs"]] == [1]


def test_a_blown_up_epoch_is_neither_evaluated_nor_checkpointed(tmp_path, monkeypatch):
    real = engines.create_trainer

    def blowing_up(*args, **kwargs):
        trainer = real(*args, **kwargs)

        @trainer.on(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i >= 9))  # epoch 2 (6 iterations per epoch)
        def blow_up(engine):
            engine.state.output["loss"] = torch.tensor(1e12)

        return trainer

    monkeypatch.setattr(engines, "create_trainer", blowing_up)
    expected = r"blew up in epoch 2: mean training loss 5e\+11 by iteration 10,"
    with pytest.raises(TrainingStopped, match=expected) as stopped:
        train(tiny_config(tmp_path, run_name="blown", epochs=3))
    run_dir = tmp_path / "runs" / "blown"
    kept = files.find_checkpoint(run_dir)
    assert kept is not None and kept.name == "last_checkpoint_6.pt" and str(kept) in str(stopped.value)
    assert stopped.value.exit_code == 1 and str(stopped.value).endswith(
        f"Try a smaller lr. Last good checkpoint: {kept}. Resume with: python -m ignite_cifar train --resume {run_dir} "
        "--lr 0.002")  # a tenth of the run's 0.02
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())["epochs"]] == [1]
    assert not (run_dir / "misclassified.json").exists()  # the completion handler did not run


def test_a_run_that_ends_at_chance_level_says_so_last(tmp_path, caplog, capsys):
    from ignite_cifar.training.divergence import chance_level

    # at most two binomial standard errors above 1/classes: 10% + 2.68% on 500 images
    assert chance_level(0.1268, 10, 500) and not chance_level(0.1270, 10, 500) and not chance_level(0.9, 10, 10000)
    with caplog.at_level("INFO", logger="ignite_cifar"):
        train(tiny_config(tmp_path, run_name="flat", epochs=1, lr=1e-12, n_misclassified=2))  # the weights stay
    assert caplog.records[-1].levelname == "WARNING" and caplog.records[-1].getMessage() == (
        "test accuracy 10.00% is chance level for 10 classes: the run did not learn; try a smaller --lr (or a "
        "larger one, if its loss never fell)")
    assert capsys.readouterr().out.startswith("final val accuracy: 10.00%")


def test_without_explain_at_end_nothing_is_explained_and_the_run_says_how_to_do_it_later(tmp_path, caplog):
    with caplog.at_level("INFO", logger="ignite_cifar"):
        result = train(tiny_config(tmp_path, run_name="later", epochs=1, explain_at_end=False))
    run_dir = Path(result["run_dir"])
    assert "final_test" not in json.loads((run_dir / "history.json").read_text())
    for name in ("misclassified.json", "gradcam.png", "evaluation.json", "explanations.json", "confusion.png"):
        assert not (run_dir / name).exists(), name
    assert (run_dir / "curves.png").is_file() and files.find_checkpoint(run_dir) is not None
    assert f"python -m ignite_cifar explain --run {run_dir}" in caplog.text
    assert cli.main(["explain", "--run", str(run_dir), "--n-misclassified", "2"]) == 0
    assert (run_dir / "gradcam.png").is_file() and listed_n(run_dir) == 2


def test_training_frees_its_model_before_the_process_group_goes(tmp_path):
    """Engines and model form reference cycles; left to interpreter shutdown, a DDP model's pending gloo
    work was freed there and aborted a worker once (SIGABRT). training() must free them itself."""
    gc.collect()
    before = {id(o) for o in gc.get_objects() if type(o) is ResNet}
    gc.disable()  # only training()'s own collection may free the cycle
    try:
        train(tiny_config(tmp_path, epochs=1, n_misclassified=2))
        alive = [o for o in gc.get_objects() if type(o) is ResNet and id(o) not in before]
    finally:
        gc.enable()
    assert alive == []


@pytest.mark.slow
def test_two_gloo_processes_agree_and_write_once(tmp_path):
    """Also the device data path's data-parallel run (`--augment-on device`, each process augmenting its own shard);
    the CPU path's (albumentations in the DataLoader) is tests/test_stopping.py's, stopped and resumed."""
    result = train(tiny_config(tmp_path, run_name="ddp", nproc_per_node=2, backend="gloo", augment_on="device"))
    run_dir = Path(result["run_dir"])
    assert _derived(run_dir)["augment_on"] == "device"
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    dist = history["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert dist["replica_checksums"][0] == dist["replica_checksums"][1]
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    assert len(list((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))) == 1
    assert (run_dir / "gradcam.png").is_file() and (run_dir / "misclassified.json").is_file()
    # global batch 50 split over 2 processes: 300 images -> 6 iterations per epoch, as with one process
    assert history["epochs"][-1]["iteration"] == 12


def _yaml(name: str) -> dict:
    from ignite_cifar.config import read_yaml

    return read_yaml(name)


def test_shipped_smoke_config_fits_the_synthetic_data_as_shipped(tmp_path):
    """`make smoke` with no options: the shipped config must pass every check before training and fit the
    synthetic data set's sizes (the same config trains end to end on the real images: real_smoke_run)."""
    from ignite_cifar.config import make_config, read_yaml
    from ignite_cifar.training.launch import plan_run

    plan = plan_run(make_config(read_yaml("smoke"), {"output_dir": str(tmp_path)}))
    assert plan.config.dataset == "synthetic" and len(plan.data.train) == plan.config.train_subset == 3000
    assert len(plan.data.test) == plan.config.test_subset


def test_evaluation_and_mistakes_agree_with_an_independent_prediction(smoke_run):
    """Recompute everything from the saved model over the whole test split, without the project's own helpers."""
    run_dir, _ = smoke_run
    config, derived, model, _, _ = load_run(str(run_dir))
    test = load_data(config).test
    with torch.no_grad():
        probs = model.eval()(normalize_array(test.images, derived["mean"], derived["std"])).softmax(1)
    confidence, pred = (t.numpy() for t in probs.max(1))
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    per_class = evaluation["per_class_accuracy"]
    for k, name in enumerate(derived["classes"]):
        assert per_class[name] == pytest.approx(float((pred[test.labels == k] == k).mean()))
    # the subset is stratified (10 images per class): the mean of the per-class accuracies is the accuracy
    assert np.mean(list(per_class.values())) == pytest.approx(evaluation["test_accuracy"])
    assert evaluation["test_accuracy"] == pytest.approx(float((pred == test.labels).mean()))
    wrong = np.flatnonzero(pred != test.labels)
    most_confident = wrong[np.argsort(-confidence[wrong], kind="stable")][:listed_n(run_dir)]
    listed = json.loads((run_dir / "misclassified.json").read_text())
    assert listed["total_misclassified"] == len(wrong)
    assert sorted(m["index"] for m in listed["mistakes"]) == sorted(most_confident.tolist())


def test_a_nan_loss_on_another_process_stops_this_one_at_the_same_read(monkeypatch):
    """Data-parallel: one process's loss turns NaN while this one's stays finite. The read's all-reduce carries the
    NaN over, so this process stops at the same iteration instead of waiting alone at the next gradient all-reduce."""
    from ignite.engine import Engine

    from ignite_cifar.training import divergence

    other_process = torch.tensor([float("nan"), 2.0])  # its loss sum and count for this epoch
    monkeypatch.setattr(divergence.idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(divergence.idist, "all_reduce", lambda total: total + other_process)
    engine = Engine(lambda e, batch: {"loss": torch.tensor(2.3), "y_pred": torch.zeros(1, 10)})
    guard = divergence.LossGuard(every=2).attach(engine)
    engine.run(range(6), max_epochs=1)
    assert guard.iteration == 2 and guard.blown_up is None and engine.state.iteration == 2
    assert "the loss became NaN or infinite at iteration 2" in str(guard.error(Path("/nonexistent"), 1, Config()))
