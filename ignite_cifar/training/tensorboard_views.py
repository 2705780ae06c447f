"""What TensorBoard shows beyond the plain scalars: the run's HParams row and the train-against-val layout."""

from __future__ import annotations

import statistics
from dataclasses import fields
from typing import Any, Sequence

from torch.utils.tensorboard.summary import hparams

# Config fields that do not shape the result: where things are, how they are shown, how the machine runs them.
NOT_HYPERPARAMETERS = frozenset({
    "data_dir", "skip_bad_images", "num_workers", "torch_threads", "device", "backend", "nproc_per_node",
    "log_every", "output_dir", "run_name", "resume", "n_misclassified", "mistake_order", "gradcam_method",
    "gradcam_layer", "explain_checkpoint", "explain_at_end", "probe_every", "probe_size", "eval_batch_size"})

# Metric tags of the HParams table, each a scalar (the table shows its latest value); val/accuracy is the epoch
# log's own tag, not written a second time under another name.
METRICS = {
    "hparams/best_val_accuracy": "best val accuracy",
    "val/accuracy": "val accuracy at the last epoch done",
    "hparams/final_test_accuracy": "test accuracy of the explained model when training completed",
    "hparams/final_test_loss": "test loss of the explained model when training completed",
    "hparams/epochs_done": "epochs trained",
    "hparams/training_seconds": "seconds of training and evaluation, all epochs (resumed ones included)",
    "hparams/train_images_per_s": "training images/s, median over epochs",
}

LAYOUT = {"train vs val": {
    "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
    "accuracy": ["Multiline", [r"^train/accuracy$", r"^val/accuracy$"]],
    "learning rate (per epoch)": ["Multiline", [r"^lr/group_0$"]],
}}


def hyperparameters(config) -> dict[str, Any]:
    """The config fields that shape the result, as the str/bool/int/float values HParams takes."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NOT_HYPERPARAMETERS}


class HParamsLog:
    """One HParams row per run folder. A resumed run writes into the same tb/ folder, so it updates its row
    (the session start is written again, the metrics continue) rather than adding a second one."""

    def __init__(self, writer, config):
        self.writer = writer
        experiment, self._start, self._end = hparams(hyperparameters(config), {tag: 0.0 for tag in METRICS})
        for summary in (experiment, self._start):
            writer.file_writer.add_summary(summary)

    def record_epochs(self, records: Sequence[dict[str, Any]]) -> None:
        """After each epoch: the metrics that the history so far gives."""
        if not records:
            return
        step = records[-1]["epoch"]
        rates = [r["train_images_per_s"] for r in records if r.get("train_images_per_s")]
        values = {
            "hparams/best_val_accuracy": max(r["val_accuracy"] for r in records),
            "hparams/epochs_done": len(records),
            "hparams/training_seconds": sum(r["epoch_seconds"] + (r.get("val_seconds") or 0.0) for r in records),
            "hparams/train_images_per_s": statistics.median(rates) if rates else 0.0,
        }
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def record_completion(self, test_accuracy: float, test_loss: float, step: int) -> None:
        self.writer.add_scalar("hparams/final_test_accuracy", test_accuracy, step)
        self.writer.add_scalar("hparams/final_test_loss", test_loss, step)
        self.writer.file_writer.add_summary(self._end)
        self.writer.flush()


def add_layout(writer) -> None:
    """Custom scalars: train and val loss on one chart, train and val accuracy on another, the lr beside them."""
    writer.add_custom_scalars(LAYOUT)
