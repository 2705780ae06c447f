"""The GradCAM probe: a fixed handful of test images explained every few epochs while the network trains.

Logged to TensorBoard as one image per explained epoch (tag `probe/gradcam`), so the step slider shows where the
network looks at epoch 5, 10, ... The probe images are a class-stratified subset of the test split chosen by the
seed alone: every run on the same data with the same seed gets the same ones.
"""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from ignite_cifar.data.datasets import stratified_indices
from ignite_cifar.explain import figures
from ignite_cifar.explain.faithfulness import assess
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.settings import ExplainSettings, LabelledImages

TAG = "probe/gradcam"


def probe_indices(labels, size: int, seed: int):
    """The probe images' test indices: a class-stratified subset fixed by the seed."""
    return stratified_indices(labels, min(size, len(labels)), seed)


class GradCAMProbe:
    """GradCAM of `model` for each probe image's true and predicted class, drawn as one figure.

    Args:
        model: the network being trained (the plain module, not a DDP or compiled wrapper).
        test: the test split the probe images are drawn from, with its class names and channel statistics.
        settings: the CAM layer and method (as for the completion figures).
        device: where GradCAM runs.
        size: how many probe images (a class-stratified subset fixed by `seed`).
        seed: the run's seed.
    """

    def __init__(self, model: nn.Module, test: LabelledImages, settings: ExplainSettings, device: torch.device,
                 size: int, seed: int):
        self.model, self.test, self.device = model, test, device
        self.classes = test.classes
        self.layer, self.method = settings.gradcam_layer, settings.gradcam_method
        self.index = probe_indices(test.split.labels, size, seed)
        self.images = test.normalized(self.index)
        self.labels = test.split.labels[self.index]

    def explain(self) -> dict[str, Any]:
        """Maps for the predicted and the true class, the predictions and both classes' probabilities."""
        x = self.images.to(self.device)
        true = torch.as_tensor(self.labels, device=self.device)
        with GradCAM(self.model, target_layer=self.layer, method=self.method) as cam:
            cam_pred = cam(x)  # None: each image's predicted class
            probs = torch.softmax(cam.last_logits.float(), dim=1)
            pred = cam.last_predictions
            cam_true = cam(x, class_idx=true)
        return {"maps": cam_pred, "predictions": pred,  # tensors on the device, for faithfulness()
                "cam_pred": cam_pred.cpu().numpy(), "cam_true": cam_true.cpu().numpy(),
                "pred": pred.cpu().tolist(), "p_pred": probs.gather(1, pred[:, None])[:, 0].cpu().tolist(),
                "p_true": probs.gather(1, true[:, None])[:, 0].cpu().tolist()}

    def faithfulness(self, explained: dict[str, Any] | None = None) -> dict[str, float]:
        """TensorBoard scalars `probe/<score>`: the means over the probe images of their predicted class's map
        (deletion/insertion AUC against random regions of the map's grid, Spearman after each randomized stage).
        `explained`: what explain() returned for the same weights (its maps are not computed again)."""
        explained = explained or self.explain()
        x = self.images.to(self.device)
        means = assess(self.model, x, explained["predictions"], explained["maps"], self.layer, self.method)["means"]
        return {f"probe/{key}": value for key, value in means.items()}

    def figure(self, epoch: int, explained: dict[str, Any] | None = None):
        out = explained or self.explain()
        entries = [{"index": int(i), "pred_name": f"{self.classes[p]} {pp:.2f}",
                    "true_name": f"{self.classes[t]} {pt:.2f}"}
                   for i, p, t, pp, pt in zip(self.index, out["pred"], self.labels, out["p_pred"], out["p_true"],
                                                         strict=True)]
        shown = self.test.shown(self.images)
        title = (f"epoch {epoch}: {self.method} of the probe images, for the predicted and the true class "
                 "(with each class's probability; jet: red = high)")
        return figures.gradcam_grid(shown, out["cam_pred"], out["cam_true"], entries, method=self.method,
                                    title=title)

    def attach(self, trainer: Engine, writer, every: int) -> None:
        """Explain after the epochs divisible by `every` and after the last one (after that epoch's evaluation,
        so the figure and the faithfulness scalars belong to the same weights as the epoch's val metrics)."""

        def due(engine: Engine, epoch: int) -> bool:
            return epoch % every == 0 or epoch == engine.state.max_epochs

        @trainer.on(Events.EPOCH_COMPLETED(event_filter=due))
        def log_probe(engine: Engine) -> None:
            explained = self.explain()  # one set of maps for the figure and the scores
            writer.add_figure(TAG, self.figure(engine.state.epoch, explained), global_step=engine.state.epoch,
                              close=True)
            for tag, value in self.faithfulness(explained).items():
                writer.add_scalar(tag, value, global_step=engine.state.epoch)
