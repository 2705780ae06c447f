"""Config: defaults are the recipe study's winner, shipped YAML files resolve, layering, coercion and errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from ignite_cifar.config import (
    MAX_AUTO_WORKERS,
    Config,
    coerce,
    field_names,
    make_config,
    read_yaml,
    saved_run_config,
)
from ignite_cifar.data.loaders import resolve_num_workers, resolve_torch_threads
from ignite_cifar.errors import ConfigError
from ignite_cifar.training.tensorboard_views import hyperparameters

from .helpers import REPO, load_benchmark

recipe_rule = load_benchmark("recipe_rule")


# ---------------------------------------------------------------- defaults and shipped files
def test_defaults_are_the_measured_recipe_on_the_assignment_s_network_and_data():
    c = Config()
    assert (c.epochs, c.model, c.norm, c.width, c.batch_size) == (40, "resnet18", "layer", 1.0, 128)
    assert (c.optimizer, c.lr, c.weight_decay, c.ema_decay) == ("adam", 1e-3, 1e-4, 0.999)
    assert (c.plateau_factor, c.plateau_patience, c.min_lr, c.plateau_on) == (0.1, 2, 1e-5, "ema")
    assert (c.plateau_threshold, c.plateau_threshold_mode) == (1e-4, "rel")
    assert (c.crop_padding, c.rotate_limit, c.cutout_size) == (4, 5.0, 16)
    assert c.p_crop == 1.0 and 0 < c.p_rotate <= 1 and 0 < c.p_cutout <= 1
    assert (c.p_hflip, c.p_shift_scale_rotate, c.p_to_gray) == (0.0, 0.0, 0.0)
    assert (c.label_smoothing, c.zero_init_residual, c.warmup_epochs) == (0.0, False, 0)
    assert c.weight_standardization is True
    assert c.validate() is c


def test_the_defaults_are_written_once_and_mission_differs_only_in_the_recipe_study_s_winner():
    with pytest.raises(ConfigError, match="no such file"):  # no default.yaml: the Config fields are the one copy
        read_yaml("default")
    assignment, default = make_config(read_yaml("assignment")).to_dict(), Config().to_dict()
    changed = {name: default[name] for name in default if assignment[name] != default[name]}
    assert set(changed) == {"optimizer", "lr", "weight_decay", "ema_decay", "plateau_on", "weight_standardization"}
    winner = recipe_rule.DEFAULT  # the study's default recipe: a YAML of changes to the assignment
    study_recipe = yaml.safe_load((REPO / "benchmarks" / "study" / "recipes" / f"{winner}.yaml").read_text())
    assert changed == {name: coerce(name, value) for name, value in study_recipe.items()}


def test_mission_yaml_pins_every_recipe_field_to_the_original_assignment():
    data = read_yaml("assignment")
    not_recipe = {"train_subset", "test_subset", "seed", "amp", "channels_last", "compile", "compile_mode",
                  "augment_on"}
    assert set(hyperparameters(Config())) - not_recipe <= set(data)  # a new recipe field must be pinned here
    c = make_config(data)
    assert (c.model, c.norm, c.width, c.epochs, c.batch_size, c.val_split) == ("resnet18", "layer", 1.0, 40, 128, 0.0)
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert (c.plateau_factor, c.plateau_patience, c.min_lr) == (0.1, 2, 1e-5)
    assert (c.crop_padding, c.p_crop, c.rotate_limit, c.p_rotate, c.cutout_size, c.p_cutout) == (4, 1.0, 5.0, 0.5,
                                                                                                  16, 0.5)
    assert (c.p_hflip, c.p_shift_scale_rotate, c.p_to_gray) == (0.0, 0.0, 0.0)
    assert (c.zero_init_residual, c.label_smoothing, c.warmup_epochs, c.ema_decay) == (False, 0.0, 0, 0.0)


def test_smoke_yaml_resolves_and_validates():
    data = read_yaml("smoke")
    config = make_config(data)
    assert config.dataset == "synthetic" and config.norm == "layer"
    for name, value in data.items():
        assert getattr(config, name) == coerce(name, value)
    assert config.epochs < Config().epochs and config.width < 1.0


# ---------------------------------------------------------------- layering and coercion
def test_later_layers_win():
    config = make_config({"epochs": 3, "lr": 0.5}, {"epochs": "7"}, {"batch_size": 16})
    assert config.epochs == 7 and config.lr == 0.5 and config.batch_size == 16
    assert config.momentum == Config().momentum


def test_dashed_names_are_accepted():
    assert make_config({"batch-size": "32"}).batch_size == 32


@pytest.mark.parametrize("name, raw, expected", [
    ("epochs", "3", 3), ("epochs", 3.0, 3), ("lr", "0.1", 0.1), ("lr", 1, 1.0), ("weight_decay", "5e-4", 5e-4),
    ("compile", "true", True), ("compile", "false", False), ("compile", "True", True), ("compile", False, False),
    ("run_name", 12, "12"), ("resume", None, ""),
])
def test_coerce_converts(name, raw, expected):
    value = coerce(name, raw)
    assert value == expected and type(value) is type(expected)


def test_yaml_booleans_for_on_off_choices(tmp_path):
    # YAML 1.1 reads a bare `off`/`on` as a bool; the amp field's choices are the words.
    path = tmp_path / "amp.yaml"
    path.write_text("amp: off\n")
    assert make_config(read_yaml(str(path))).amp == "off"
    path.write_text("amp: on\n")
    assert make_config(read_yaml(str(path))).amp == "on"


@pytest.mark.parametrize("layer, field", [
    ({"no_such_field": 1}, "no_such_field"),
    ({"epochs": "abc"}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"lr": "x"}, "lr"),
    ({"compile": "maybe"}, "compile"),
    ({"compile_mode": "reduce-overhead"}, "compile_mode"),  # without compile: true
    ({"compile_mode": "max-autotune"}, "compile_mode"),
    ({"eval_batch_size": 0}, "eval_batch_size"),
    ({"run_name": [1, 2]}, "run_name"),
    ({"epochs": 0}, "epochs"),
    ({"lr": 0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"val_split": -0.1}, "val_split"),
    ({"val_split": 1.0}, "val_split"),
    ({"model": "vgg"}, "model"),
    ({"norm": "batch"}, "norm"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"gradcam_method": "scorecam"}, "gradcam_method"),
    ({"mistake_order": "random"}, "mistake_order"),
    ({"p_rotate": 1.5}, "p_rotate"),
    ({"p_cutout": -0.5}, "p_cutout"),
    ({"width": 0}, "width"),
    ({"cutout_size": 33}, "cutout_size"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"zero_init_residual": "sometimes"}, "zero_init_residual"),
    ({"warmup_epochs": -1}, "warmup_epochs"),
    ({"warmup_epochs": 0.5}, "warmup_epochs"),
])
def test_bad_values_name_the_field(layer, field):
    with pytest.raises(ConfigError) as info:
        make_config(layer)
    assert field in str(info.value)


@pytest.mark.parametrize("name", ["../escaped", "/some/absolute/path", "a/b", "runs/", ".", "..", " ", "a\0b"])
def test_a_run_name_is_one_folder_name(name):
    with pytest.raises(ConfigError, match=r"^run_name: .* (is not a folder name|is empty)") as info:
        make_config({"run_name": name})
    assert repr(name) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["adam", "run-1.5_seed 2", "..x", "x..", "~"])
def test_a_folder_name_with_dots_or_spaces_is_a_run_name(name):
    assert make_config({"run_name": name}).run_name == name


def test_a_saved_run_keeps_working_when_its_name_predates_the_rule():
    """A run started as --run-name sub/run before names were checked is still resumed and explained: its folder is
    known, so the saved name is dropped, not refused."""
    assert saved_run_config({"run_name": "sub/run", "epochs": 3}).run_name == ""
    assert saved_run_config({"run_name": "kept"}).run_name == "kept"
    with pytest.raises(ConfigError, match="run_name"):
        saved_run_config({"run_name": "kept"}, {"run_name": "../given-now"})


def test_unknown_choice_lists_the_choices():
    with pytest.raises(ConfigError, match="resnet18, resnet34"):
        make_config({"model": "vgg"})


def test_boundary_values_are_allowed():
    config = make_config({"val_split": 0.0, "p_rotate": 1.0, "p_cutout": 0.0, "epochs": 1, "batch_size": 1})
    assert config.val_split == 0.0 and config.p_rotate == 1.0
    assert make_config({"val_split": 0.99}).val_split == 0.99
    assert make_config({"label_smoothing": 0.0}).label_smoothing == 0.0
    assert make_config({"label_smoothing": 0.99, "optimizer": "adam"}).optimizer == "adam"


def test_every_field_has_a_type_coerce_knows():
    config = Config()
    for name in field_names():
        value = getattr(config, name)
        assert coerce(name, value) == value, name
    assert [f.name for f in dataclasses.fields(Config)] == field_names()


# ---------------------------------------------------------------- YAML files
@pytest.mark.parametrize("text", [
    "epochs: 3\nmodel: resnet18\nlr: [0.1\nbatch_size: 4\n",  # the parser trips on line 4
    "epochs: 3\nmodel: resnet18\nlr: [0.1\n",  # ... or at the end of the file
])
def test_yaml_that_does_not_parse_names_the_line(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(str(path))
    message = str(info.value)
    assert "line 3" in message and str(path) in message


def test_yaml_with_bad_indentation_names_the_line(tmp_path):
    path = tmp_path / "indent.yaml"
    path.write_text("epochs: 3\nmodel: resnet18\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="line 3"):
        read_yaml(str(path))


def test_yaml_list_is_not_a_config(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- epochs: 3\n- lr: 0.1\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(str(path))


def test_missing_yaml_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such file"):
        read_yaml(str(missing))


def test_empty_yaml_is_an_empty_layer(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert read_yaml(str(path)) == {}
    assert make_config(read_yaml(str(path))) == Config()


def test_yaml_values_are_validated(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 0\n")
    with pytest.raises(ConfigError, match="epochs"):
        make_config(read_yaml(str(path)))


@pytest.mark.parametrize("raw, expected", [("auto", "auto"), ("AUTO", "auto"), ("3", 3), (0, 0), (2.0, 2)])
def test_num_workers_is_a_count_or_auto(raw, expected):
    assert make_config({"num_workers": raw}).num_workers == expected


@pytest.mark.parametrize("raw", ["-1", "many", 1.5, True])
def test_num_workers_refuses_what_is_not_a_count(raw):
    with pytest.raises(ConfigError, match="num_workers"):
        make_config({"num_workers": raw})


@pytest.mark.parametrize("cores, nproc, expected", [
    (2, 1, 1),     # this 2-core CPU: one core trains, one loads
    (16, 1, MAX_AUTO_WORKERS),  # a GPU box: capped
    (2, 2, 0),     # two processes on two cores: load in-process
    (64, 4, 4 * MAX_AUTO_WORKERS),  # for the node: ignite splits them among the processes
    (1, 1, 0),
])
def test_auto_workers_fit_the_cores(cores, nproc, expected):
    assert resolve_num_workers("auto", nproc, cores) == expected
    assert resolve_num_workers(3, nproc, cores) == 3


@pytest.mark.parametrize("cores, nproc, expected", [(2, 1, 1), (16, 1, 1), (16, 4, 4), (2, 2, 0), (1, 1, 0)])
def test_auto_workers_on_a_cpu_device_are_one_per_process_leaving_the_rest_to_torch(cores, nproc, expected):
    assert resolve_num_workers("auto", nproc, cores, "cpu") == expected
    assert resolve_num_workers(3, nproc, cores, "cpu") == 3


@pytest.mark.parametrize("cores, nproc, workers, augment_on, expected", [
    (2, 1, "auto", "cpu", 1),     # this 2-core CPU: one core for the step, one for the worker
    (2, 1, 0, "cpu", 2),          # no workers: both cores
    (2, 1, "auto", "device", 2),  # batched augmentation needs no workers
    (2, 2, "auto", "cpu", 1),     # two processes on two cores, no workers left
    (16, 2, 4, "cpu", 6),         # 8 cores a process, 2 workers each
    (16, 1, "auto", "cpu", 15),   # one worker on a CPU device, the other cores train
    (4, 1, 8, "cpu", 1),          # more workers than cores: still one thread
])
def test_auto_torch_threads_leave_the_data_workers_their_cores(cores, nproc, workers, augment_on, expected):
    config = make_config({"num_workers": workers, "augment_on": augment_on, "device": "cpu"})
    assert resolve_torch_threads(config, "cpu", nproc, cores, environ={}) == expected
    assert resolve_torch_threads(config, "cpu", nproc, cores, environ={"OMP_NUM_THREADS": "3"}) is None
    assert resolve_torch_threads(make_config({"torch_threads": 3}), "cpu", nproc, cores, environ={}) == 3


@pytest.mark.parametrize("raw", ["0", "-2", "some"])
def test_torch_threads_refuses_what_is_not_a_positive_count(raw):
    with pytest.raises(ConfigError, match="torch_threads"):
        make_config({"torch_threads": raw})


def test_every_choice_has_its_meaning_where_it_lives():
    from torch import nn

    from ignite_cifar import config_checks as choices
    from ignite_cifar.explain import gradcam
    from ignite_cifar.model import resnet as models

    assert tuple(models.BLOCKS) == choices.ARCHITECTURES
    groups = {"layer": 1, "group": 8}  # LayerNorm over (C, H, W); GroupNorm with up to 32 groups, here 8 of 1
    assert set(groups) == set(choices.NORMS)
    for norm in choices.NORMS:
        built = models.norm_factory(norm)(8)
        assert type(built) is nn.GroupNorm and (built.num_groups, built.num_channels) == (groups[norm], 8), norm
    for method in choices.CAM_METHODS:
        gradcam.GradCAM(models.build_model(width=0.0625), "layer4", method=method).release()


@pytest.mark.slow
def test_reading_a_config_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from ignite_cifar.config import make_config, read_yaml; make_config(read_yaml('assignment')); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ignite', 'albumentations')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_config_files_layer_in_the_order_given_and_flags_win(tmp_path):
    from ignite_cifar.cli import build_parser, config_from_args

    change = tmp_path / "change.yaml"
    change.write_text("optimizer: adam\nlr: 0.003\n")
    args = build_parser().parse_args(["train", "--config", "assignment", "--config", str(change), "--epochs", "3"])
    config = config_from_args(args)
    assert (config.optimizer, config.lr, config.epochs) == ("adam", 0.003, 3)
    assert (config.weight_decay, config.ema_decay) == (5e-4, 0.0)  # from assignment, under the change
    assert config_from_args(build_parser().parse_args(["train"])) == Config()
