"""The smoke run on the real images, and TensorBoard as a user sees it: a real server on that finished run, read
through its HTTP data API: scalars, the GradCAM probe at every explained epoch, the train-vs-val layout and the
HParams row. (The only tests of the real-image run: `make test` keeps each file on one worker, so it is built once.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ignite_cifar.training.tensorboard_views import METRICS

pytestmark = pytest.mark.slow  # a TensorBoard server, and the smoke config trained on real images (tests/conftest.py)

SCALARS = {"train/batch_loss", "lr/group_0", "train/loss", "train/accuracy", "val/loss", "val/accuracy", *METRICS}
IMAGES = {"probe/gradcam", "explain/misclassified", "explain/gradcam", "explain/confusion"}
HANG_GUARD_S = 180  # not a speed limit: only keeps a server that never answers from blocking the suite


class Server:
    """`tensorboard --port 0` (it picks a free port itself, so no other process can take it in between)."""

    def __init__(self, logdir: Path):
        exe = Path(sys.executable).with_name("tensorboard")
        self.process = subprocess.Popen([str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        for line in self.process.stderr:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if found:
                return found.group(1)
        pytest.fail(f"tensorboard exited ({self.process.wait()}) without serving")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, path: str, done) -> dict:
        """Poll until `done(answer)`: the server loads event files in the background, tag by tag."""
        deadline, answer = time.monotonic() + HANG_GUARD_S, {}
        while time.monotonic() < deadline:
            try:
                answer = self.get(path)
                if done(answer):
                    return answer
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{path} never showed everything expected; last answer: {answer}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(real_smoke_run):
    run_dir, _, config = real_smoke_run
    server = Server(run_dir / "tb")
    server.wait_for("/data/plugin/scalars/tags", lambda tags: SCALARS <= set(tags.get(".", {})))
    server.wait_for("/data/plugin/images/tags", lambda tags: IMAGES <= set(tags.get(".", {})))
    yield server, run_dir, config
    server.close()


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def test_scalars_are_the_documented_ones_with_the_history_values(served):
    server, run_dir, _ = served
    points = server.get("/data/plugin/scalars/scalars?tag=val/accuracy&run=.")
    epochs = _history(run_dir)["epochs"]
    assert [p[1] for p in points] == [1, 2]  # (wall time, step = epoch, value)
    assert [p[2] for p in points] == pytest.approx([e["val_accuracy"] for e in epochs])
    lr_points = server.get("/data/plugin/scalars/scalars?tag=lr/group_0&run=.")
    assert [(p[1], p[2]) for p in lr_points] == [(e["epoch"], pytest.approx(e["lr"])) for e in epochs]


def test_each_score_is_logged_under_one_tag(served):
    """The lr once (per epoch), the val accuracy once (HParams reads val/accuracy itself), the final model's probe
    scores once (probe/*, not again as explain/probe/*)."""
    server, _, _ = served
    tags = set(server.get("/data/plugin/scalars/tags")["."])
    assert "lr/group_0" in tags and "probe/deletion_ratio/random_regions" in tags
    assert not {t for t in tags if t.startswith(("epoch/", "explain/probe/")) or t == "hparams/final_val_accuracy"}


def test_the_probe_is_logged_at_every_explained_epoch(served):
    server, _, config = served
    assert config.probe_every == 1
    entries = server.get("/data/plugin/images/images?run=.&tag=probe/gradcam")
    assert [e["step"] for e in entries] == [1, 2]
    with urllib.request.urlopen(server.url + "/data/plugin/images/individualImage?" + entries[-1]["query"],
                                timeout=10) as response:
        assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_and_val_share_a_chart_in_the_custom_scalars_layout(served):
    server, _, _ = served
    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
              for chart in category["chart"]}
    assert charts["loss"] == [r"^train/loss$", r"^val/loss$"]
    assert charts["accuracy"] == [r"^train/accuracy$", r"^val/accuracy$"]
    assert charts["learning rate (per epoch)"] == [r"^lr/group_0$"]


def test_hparams_row_holds_the_config_and_the_results(served):
    server, run_dir, config = served
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"lr", "width", "norm", "model", "seed", "plateau_factor", "p_cutout"} <= {
        h["name"] for h in experiment["hparamInfos"]}
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(METRICS)
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["lr"] == pytest.approx(config.lr) and group["hparams"]["norm"] == "layer"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    history = _history(run_dir)
    assert values["hparams/final_test_accuracy"] == pytest.approx(history["final_test"]["test_accuracy"])
    assert values["hparams/best_val_accuracy"] == pytest.approx(max(e["val_accuracy"] for e in history["epochs"]))
    assert values["hparams/epochs_done"] == 2


def test_real_images_smoke_run(real_smoke_run):
    """The shipped smoke config on the real CIFAR-10 JPEG export (a stratified subset)."""
    run_dir, result, config = real_smoke_run
    for name in ("config.yaml", "history.json", "curves.png", "misclassified.png", "gradcam.png",
                 "misclassified.json", "confusion.png", "evaluation.json"):
        assert (run_dir / name).is_file(), name
    derived = yaml.safe_load((run_dir / "config.yaml").read_text())["derived"]
    assert derived["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]
    assert derived["train_images"] == config.train_subset and derived["test_images"] == config.test_subset
    listed = json.loads((run_dir / "misclassified.json").read_text())
    assert listed["found"] == 20
    assert result["val_accuracy"] > 0.15  # chance is 0.10
