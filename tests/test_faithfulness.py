"""Sanity (parameter randomization) and faithfulness (deletion / insertion) of GradCAM maps, on tiny models."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from ignite_cifar.explain import faithfulness as fa
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.settings import Destination, ExplainSettings, LabelledImages

SIZE, PATCH = 16, 4  # 4 x 4 cells of 4 x 4 pixels; layer4 of PatchNet has exactly that grid
CELLS = SIZE // PATCH
# Class c is a bright patch of colour PALETTE[c] somewhere on noise; everything else carries no class.
PALETTE = 3 * torch.tensor([[1.0, -1, -1], [-1, 1.0, -1], [-1, -1, 1.0], [1.0, 1.0, -1]])


def patch_images(n: int, seed: int):
    """Normalized-like images: noise (std 0.5) with one class-coloured patch on a cell of the 4 x 4 grid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g) * 0.5
    y = torch.randint(0, len(PALETTE), (n,), generator=g)
    where = torch.randint(0, CELLS * CELLS, (n,), generator=g)
    rows = torch.arange(SIZE)[None, :, None] // PATCH
    cols = torch.arange(SIZE)[None, None, :] // PATCH
    mask = (rows == (where // CELLS)[:, None, None]) & (cols == (where % CELLS)[:, None, None])
    x = torch.where(mask[:, None], PALETTE[y][:, :, None, None] + 0.1 * x, x)
    return x, y, mask


def _conv(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU())


class PatchNet(nn.Module):
    """The project ResNet's stage names (conv1, norm1, layer1-4, fc) in a few thousand parameters; 16 -> 4 x 4."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm1 = nn.GroupNorm(1, 8)
        self.layer1, self.layer2 = _conv(8, 8), _conv(8, 16, 2)
        self.layer3, self.layer4 = _conv(16, 16), _conv(16, 32, 2)
        self.dropout = nn.Dropout(0.2)  # makes train/eval mode matter
        self.fc = nn.Linear(32, len(PALETTE))

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


@pytest.fixture(scope="module")
def trained():
    """PatchNet after 60 Adam steps on patch images (100% on held-out ones), in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PatchNet()
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        for step in range(60):
            x, y, _ = patch_images(32, 100 + step)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    x, y, mask = patch_images(32, 1)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.9, "the tiny model did not learn the patch"
    with GradCAM(model, "layer4") as cam:
        maps = cam(x, class_idx=y)
    return model, x, y, mask, maps


def test_patch_model_maps_lie_on_the_patch_and_beat_random_regions(trained):
    model, x, y, mask, maps = trained
    mass = (maps * mask).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    chance = PATCH**2 / SIZE**2
    assert mass.mean() > 2.5 * chance  # the upsampled 4 x 4 map spills onto the neighbours; chance is 1/16
    report = fa.assess(model, x, y, maps, "layer4", "gradcam", fa.Scoring(sanity=False))
    means = report["means"]
    assert report["grid"] == [CELLS, CELLS] and report["cell_pixels"] == [PATCH, PATCH]
    assert means["deletion_auc/map"] < 0.6 * means["deletion_auc/random_regions"]
    assert means["insertion_auc/map"] > means["insertion_auc/random_regions"] + 0.2
    assert report["verdict"]["faithful"] and report["verdict"]["baseline"] == "random_regions"
    assert len(report["per_image"]["deletion_auc/map"]) == len(x)


def test_noise_map_fails_the_faithfulness_check(trained):
    model, x, y, _, _ = trained
    g = torch.Generator().manual_seed(5)
    # Noise shaped like a GradCAM map: random values on the layer's 4 x 4 grid, upsampled bilinearly.
    noise = F.interpolate(torch.rand(len(x), 1, CELLS, CELLS, generator=g), size=(SIZE, SIZE), mode="bilinear")[:, 0]
    report = fa.assess(model, x, y, noise, "layer4", "gradcam", fa.Scoring(sanity=False))
    assert report["means"]["deletion_ratio/random_regions"] > 0.85
    assert not report["verdict"]["faithful"]
    missed = report["verdict"]["missed"][0]
    assert missed.startswith("deletion ratio ") and missed.endswith(" above 0.75")


def test_the_verdict_names_each_missed_target_with_four_decimals():
    means = {"deletion_ratio/random_regions": 0.71, "insertion_gain/random_regions": 0.0997}
    v = fa.verdict(means)  # +0.100 at three decimals, yet below the 0.1 target
    assert not v["faithful"] and v["missed"] == ["insertion gain +0.0997 below 0.1"] and v["sane"] is None
    both = fa.verdict({**means, "deletion_ratio/random_regions": 0.81, "sanity_spearman/layer4": 0.05})
    assert both["missed"] == ["deletion ratio 0.8100 above 0.75", "insertion gain +0.0997 below 0.1"] and both["sane"]
    assert fa.verdict({**means, "insertion_gain/random_regions": 0.1}) == {
        "faithful": True, "missed": [], "sane": None, "sanity": "not measured", "baseline": "random_regions",
        "targets": fa.TARGETS}
    assert both["sanity"] == "passed" and fa.verdict({**means, "sanity_spearman/layer4": 0.31})["sanity"] == "failed"
    assert fa.verdict(means, constant=3)["sanity"] == "undefined (constant maps)"


def test_constant_maps_leave_the_sanity_check_undefined_not_passed(trained):
    """A constant map (every map of a diverged model) orders nothing: its Spearman with the randomized model's map
    is reported as 0, which must not pass the check. Such images are left out of the sanity means."""
    model, x, y, _, maps = trained
    flat = torch.zeros_like(maps)
    report = fa.assess(model, x, y, flat, "layer4", "gradcam")
    assert report["constant_maps"] == len(x) and not any(k.startswith("sanity_") for k in report["means"])
    assert report["per_image"]["sanity_spearman/layer4"] == [0.0] * len(x)  # still listed, image by image
    v = report["verdict"]
    assert v["sane"] is None and v["sanity"] == "undefined (constant maps)" and not v["faithful"]
    some = maps.clone()
    some[:5] = 0.5
    partly = fa.assess(model, x, y, some, "layer4", "gradcam")
    assert partly["constant_maps"] == 5 and partly["verdict"]["sanity"] in ("passed", "failed")
    for key in ("sanity_spearman/layer4", "sanity_ssim/fc"):
        assert partly["means"][key] == pytest.approx(float(np.mean(partly["per_image"][key][5:])))


def test_similarity_falls_when_layers_are_randomized(trained):
    model, x, y, _, maps = trained
    cascade = fa.randomization_cascade(model, x, y, maps, "layer4", "gradcam")
    assert list(cascade) == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    for stage in ("layer4", "stem"):
        assert cascade[stage]["spearman"].mean() < 0.5
        assert cascade[stage]["ssim"].mean() < 0.5
    # The measure itself: the trained model's own maps are identical to themselves.
    assert_close(fa.spearman(maps, maps), torch.ones(len(maps)))
    assert_close(fa.ssim(maps, maps), torch.ones(len(maps)))


def _state(model):
    return ({n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            {n: (p.grad, p.detach().clone()) for n, p in model.named_parameters()},
            {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for n, m in model.named_modules()})


def test_model_left_exactly_as_found():
    torch.manual_seed(3)
    model = PatchNet().train()
    model.layer3.eval()
    model.conv1.requires_grad_(False)
    model.fc.weight.grad = torch.randn_like(model.fc.weight)
    modes, flags, params, hooks = _state(model)
    x, y, _ = patch_images(4, 2)
    with GradCAM(model, "layer4") as cam:
        maps = cam(x, class_idx=y)
    rng = torch.get_rng_state()
    fa.assess(model, x, y, maps, "layer4", "gradcam++", fa.Scoring(baselines=fa.BASELINES))
    assert torch.equal(torch.get_rng_state(), rng)  # seeded generators, not the global state
    now_modes, now_flags, now_params, now_hooks = _state(model)
    assert (now_modes, now_flags, now_hooks) == (modes, flags, hooks)
    for name, (grad, value) in params.items():
        assert now_params[name][0] is grad and torch.equal(now_params[name][1], value)


def test_random_regions_remove_whole_cells_one_step_at_a_time():
    g = torch.Generator().manual_seed(0)
    scores = fa.random_region_scores(3, (CELLS, CELLS), (SIZE, SIZE), g, torch.device("cpu"))
    ranks = fa.pixel_ranks(scores)
    assert sorted(ranks[0].flatten().tolist()) == list(range(SIZE * SIZE))
    # With 16 steps and 16 cells, step k removes exactly the cell of rank k.
    cell_of_rank = (ranks // PATCH**2).view(3, CELLS, PATCH, CELLS, PATCH)
    assert (cell_of_rank.amin(dim=(2, 4)) == cell_of_rank.amax(dim=(2, 4))).all()


def test_curve_endpoints_and_auc():
    model = PatchNet().eval()
    x, y, _ = patch_images(3, 4)
    deletion, insertion = fa.perturbation_curves(model, x, y, torch.rand(3, SIZE, SIZE))
    full = fa.class_probabilities(model, x, y)
    empty = fa.class_probabilities(model, torch.zeros_like(x), y)
    assert_close(deletion[:, 0], full)
    assert_close(insertion[:, -1], full)
    assert_close(deletion[:, -1], empty)
    assert_close(insertion[:, 0], empty)
    assert_close(fa.auc(torch.tensor([[0.0, 1.0, 1.0]])), torch.tensor([0.75]))


def test_the_inner_points_are_the_perturbed_images_and_the_shared_ends_change_nothing():
    """Only the points between the ends are evaluated per order; each equals its perturbed image's probability."""
    model = PatchNet().eval()
    x, y, _ = patch_images(3, 4)
    scores = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    deletion, insertion = fa.perturbation_curves(model, x, y, scores)
    shared = fa.perturbation_curves(model, x, y, scores, ends=fa.endpoint_probabilities(model, x, y))
    assert_close(shared[0], deletion)
    assert_close(shared[1], insertion)
    ranks = fa.pixel_ranks(scores)[:, None]  # B x 1 x H x W
    for k in (1, 7, 15):
        removed = ranks < round(k * SIZE * SIZE / fa.STEPS)
        assert_close(deletion[:, k], fa.class_probabilities(model, torch.where(removed, 0.0, x), y))
        assert_close(insertion[:, k], fa.class_probabilities(model, torch.where(removed, x, 0.0), y))


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 5, (4, 6, 6), generator=g).float()  # many ties
    b = a + torch.rand(4, 6, 6, generator=g) * 3
    ours = fa.spearman(a, b)
    for i in range(4):
        expected = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    assert fa.spearman(torch.zeros(1, 4, 4), b[:1, :4, :4]).item() == 0.0  # a flat map orders nothing


def test_ssim_matches_a_direct_reference():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 9, 9, generator=g), torch.rand(2, 9, 9, generator=g)
    ours = fa.ssim(a, b)
    w, n, c1, c2 = 7, 49, 0.01**2, 0.03**2
    for i in range(2):
        values = []
        for r in range(9 - w + 1):
            for c in range(9 - w + 1):
                p, q = a[i, r:r + w, c:c + w].double().flatten(), b[i, r:r + w, c:c + w].double().flatten()
                vp, vq = p.var(unbiased=True), q.var(unbiased=True)
                cov = ((p - p.mean()) * (q - q.mean())).sum() / (n - 1)
                values.append(((2 * p.mean() * q.mean() + c1) * (2 * cov + c2))
                              / ((p.mean() ** 2 + q.mean() ** 2 + c1) * (vp + vq + c2)))
        assert ours[i].item() == pytest.approx(torch.stack(values).mean().item(), abs=1e-6)


def test_deletion_and_insertion_match_pytorch_grad_cam(trained):
    """The same curves from pytorch-grad-cam's perturbation metric (zero imputation, softmax target), point by point.

    The library removes the pixels at or above a percentile of the map; with distinct map values and 16 x 16
    pixels that is exactly the top k/16 of them, so the two must agree to float rounding (1e-5)."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, y, _, maps = trained
    x, y = x[:8], y[:8]
    # GradCAM's maps with ties broken by a tiny, distinct offset (the library's thresholds cannot break ties).
    offsets = torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(0)).view(SIZE, SIZE) * 1e-6
    distinct = maps[:8] + offsets
    deletion, insertion = fa.perturbation_curves(model, x, y, distinct)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    zero_fill = lambda image, keep: image * keep  # noqa: E731  (the recipe's fill: 0 after normalization)
    cams = distinct.numpy()
    for k in range(1, fa.STEPS):
        removed = PerturbationConfidenceMetric(RemoveMostRelevantFirst(100 * (1 - k / fa.STEPS), zero_fill))
        kept = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(100 * k / fa.STEPS, zero_fill))
        lib_del = removed(x, cams, targets, model, return_diff=False)
        lib_ins = kept(x, cams, targets, model, return_diff=False)
        assert_close(deletion[:, k], torch.from_numpy(lib_del), atol=1e-5, rtol=0)
        assert_close(insertion[:, k], torch.from_numpy(lib_ins), atol=1e-5, rtol=0)


class _Writer:
    """Records what a TensorBoard SummaryWriter would get."""

    def __init__(self):
        self.scalars, self.figures, self.texts = {}, [], {}

    def add_scalar(self, tag, value, global_step=None):
        self.scalars[tag] = value

    def add_text(self, tag, text, global_step=None):
        self.texts[tag] = text

    def add_image(self, tag, image, global_step=None, dataformats="CHW"):
        assert dataformats == "HWC" and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        self.figures.append(tag)


def _completion_groups():
    """Twelve synthetic 16 x 16 test images as the completion step groups them: two mistakes, three right probe
    images; and the labelled images."""
    from ignite_cifar.data.datasets import channel_stats, synthetic_split
    from ignite_cifar.explain.faithfulness_report import image_groups
    from ignite_cifar.explain.mistakes import Predictions

    test = synthetic_split(12, 4, seed=3)
    test.images = test.images[:, :SIZE, :SIZE]
    mean, std = channel_stats(test.images)
    preds = test.labels.copy()
    preds[[0, 1]] = (preds[[0, 1]] + 1) % 4  # two mistakes; the others are right
    predictions = Predictions(preds=preds, labels=test.labels, probs=None, loss=0.0)
    mistakes = [type("M", (), {"index": i})() for i in (0, 1)]
    labelled = LabelledImages(test, [f"c{i}" for i in range(4)], mean, std)
    return image_groups(labelled, predictions, mistakes, [0, 2, 3, 5], torch.device("cpu")), labelled


def test_completion_step_writes_scores_figure_scalars(tmp_path):
    """What write_explanations adds (test_smoke checks the files appear in a real run)."""
    import json

    from ignite_cifar.explain.faithfulness_report import summary_line, write_faithfulness
    from ignite_cifar.explain.probe import GradCAMProbe

    torch.manual_seed(0)
    model = PatchNet()
    groups, labelled = _completion_groups()
    assert [g.name for g in groups] == ["mistakes", "probe"] and groups[1].index == [2, 3, 5]
    writer = _Writer()
    summary = write_faithfulness(model, groups, ExplainSettings(), Destination(tmp_path, writer, step=7))
    report = json.loads((tmp_path / "explanations.json").read_text())
    assert (tmp_path / "explanations.png").stat().st_size > 0 and writer.figures == ["explain/faithfulness"]
    assert report["groups"]["mistakes"]["images"] == [0, 1] and "random_regions" in report["baselines"]
    for key in ("deletion_auc/map", "deletion_auc/random_regions", "insertion_auc/map", "sanity_spearman/fc",
                "sanity_spearman/stem", "sanity_ssim/layer4"):
        assert len(report["groups"]["probe"]["per_image"][key]) == 3
        assert writer.scalars[f"explain/{key}"] == pytest.approx(report["groups"]["mistakes"]["means"][key])
        assert writer.scalars[f"explain/probe/{key}"] == pytest.approx(report["groups"]["probe"]["means"][key])
    assert summary["mistakes"]["verdict"]["baseline"] == "random_regions"
    assert writer.texts["explain/verdict"] == summary_line(report)
    means = {k: v for k, v in report["groups"]["mistakes"]["means"].items() if not k.startswith("sanity_")}
    means.update({"deletion_ratio/random_regions": 0.71, "insertion_gain/random_regions": 0.0997})
    report["groups"]["mistakes"].update(means=means, verdict=fa.verdict(means), constant_maps=0)
    # the log line's words for a verdict that missed one target
    assert "faithful no (insertion gain +0.0997 below 0.1), sanity check not measured" in summary_line(report)

    probe = GradCAMProbe(model, labelled, ExplainSettings(), torch.device("cpu"), 4, 0)
    scalars = probe.faithfulness()
    assert {"probe/deletion_ratio/random_regions", "probe/insertion_gain/random_regions",
            "probe/sanity_spearman/layer4"} <= set(scalars)


def test_a_model_whose_maps_are_all_constant_reports_the_sanity_check_undefined(tmp_path, caplog):
    """As a diverged model: the logits are the bias alone, no gradient reaches layer4 and every map is flat. The
    log line, explanations.json and TensorBoard say the check is undefined, and no sanity scalar reads 0.00."""
    import json

    from ignite_cifar.explain.faithfulness_report import write_faithfulness

    torch.manual_seed(0)
    model = PatchNet()
    with torch.no_grad():
        model.fc.weight.zero_()
    groups, _ = _completion_groups()
    writer = _Writer()
    with caplog.at_level("INFO", logger="ignite_cifar"):
        summary = write_faithfulness(model, groups, ExplainSettings(), Destination(tmp_path, writer, step=7))
    report = json.loads((tmp_path / "explanations.json").read_text())
    for name, group in report["groups"].items():
        assert group["constant_maps"] == len(group["images"]) and group["verdict"]["sane"] is None
        assert group["verdict"]["sanity"] == summary[name]["verdict"]["sanity"] == "undefined (constant maps)"
    line = caplog.records[-1].getMessage()
    assert "no Spearman (all 2 maps constant)" in line and "sanity check undefined (constant maps)" in line
    assert "passed" not in line and writer.texts["explain/verdict"] == line
    assert not [tag for tag in writer.scalars if "sanity" in tag]


def test_explain_own_images_photo_sized_and_bad_files(smoke_run, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from ignite_cifar.cli import main

    run_dir, _ = smoke_run
    rgba = np.zeros((480, 640, 4), np.uint8)
    rgba[..., 0] = np.linspace(0, 255, 640, dtype=np.uint8)[None]
    rgba[100:300, 200:400, 1], rgba[..., 3] = 255, 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    gray = np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not an image")

    out = tmp_path / "out"
    assert main(["explain", "--run", str(run_dir), "--images", str(tmp_path / "photo.png"), str(tmp_path / "gray.jpg"),
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(str(tmp_path / "photo.png")) and "random regions" in printed[0]
    assert "constant" not in printed[0]  # a trained map orders pixels
    report = json.loads((out / "own_images.json").read_text())
    assert [len(e["top"]) for e in report["images"]] == [3, 3] and (out / "own_images.png").stat().st_size > 0
    assert report["images"][1]["top"][0]["probability"] >= report["images"][1]["top"][1]["probability"]

    code = main(["explain", "--run", str(run_dir), "--images", str(tmp_path / "broken.jpg"),
                 str(tmp_path / "missing.png"), str(tmp_path / "photo.png")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2 and "Traceback" not in "".join(err)
    assert "broken.jpg" in err[0] and "missing.png" in err[1] and all(e.startswith("ignite-cifar: error:") for e in err)


def test_explain_refuses_an_image_pil_refuses_as_too_large_in_one_line(smoke_run, tmp_path, capsys):
    from ignite_cifar.cli import main

    from .helpers import write_huge_png

    run_dir, _ = smoke_run
    huge = write_huge_png(tmp_path / "big.png")  # 20000 x 10000: PIL raises DecompressionBombError
    assert main(["explain", "--run", str(run_dir), "--images", str(huge)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ignite-cifar: error: images: cannot read {huge} as an image (DecompressionBombError: Image size "
                   "(200000000 pixels) exceeds limit of 178956970 pixels)"]


def test_explain_own_images_says_a_constant_map_has_no_sanity_score(tmp_path):
    """A diverged model's map is flat: per image, own_images.json holds no Spearman or SSIM (None, not 0.00, which
    would read as a perfect sanity result) and marks the map constant; the caption says undefined."""
    import json

    import numpy as np
    from PIL import Image

    from ignite_cifar.explain.own_images import explain_images, sanity_words

    torch.manual_seed(0)
    model = PatchNet().eval()
    with torch.no_grad():
        model.fc.weight.zero_()  # the logits are the bias alone: no gradient reaches layer4
    paths = []
    for k in range(2):
        pixels = np.random.default_rng(k).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(pixels).save(paths[-1])
    derived = {"mean": [0.5] * 3, "std": [0.25] * 3, "classes": [f"c{i}" for i in range(len(PALETTE))]}
    entries = explain_images(model, [str(p) for p in paths], derived, tmp_path, "layer4", "gradcam",
                             torch.device("cpu"))
    saved = json.loads((tmp_path / "own_images.json").read_text())["images"]
    for entry in (*entries, *saved):
        assert entry["constant_map"] is True and entry["sanity_spearman/layer4"] is None
        assert all(v is None for k, v in entry.items() if k.startswith("sanity_"))
    assert sanity_words(entries[0]) == "undefined (constant map)"
    assert sanity_words({"constant_map": False, "sanity_spearman/layer4": 0.123}) == "0.12"
