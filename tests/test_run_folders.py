"""A run folder belongs to one run: claimed with a create that fails when it exists, locked while a run writes in it,
its name and path refused before anything is written when a file system would refuse them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ignite_cifar import cli, run_folders
from ignite_cifar.errors import ConfigError, MachineError

# the CLI with the clock stopped, so that runs started together get the same timestamp for certain
FROZEN_CLOCK_CLI = """
import datetime, sys, types
import ignite_cifar.run_folders as folders

class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 12, 7, 12, 0, 0)

folders.dt = types.SimpleNamespace(datetime=Frozen)
from ignite_cifar.cli import main
sys.exit(main(sys.argv[1:]))
"""
TINY = ["--dataset", "synthetic", "--width", "0.0625", "--epochs", "1", "--batch-size", "50", "--train-subset", "50",
        "--test-subset", "50", "--num-workers", "0", "--no-explain-at-end", "--probe-every", "0", "--amp", "off"]


def _start(out: Path, seed: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", FROZEN_CLOCK_CLI, "train", *TINY, "--seed", str(seed),
                             "--output-dir", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


@pytest.mark.slow
def test_runs_started_together_each_get_their_own_complete_folder(tmp_path):
    """Three runs with the default name in the same second, and two with one --run-name, all at once (real
    processes): the three get <stamp>, <stamp>-1, <stamp>-2, each holding its own config and finished epoch; of the
    two, one trains and the other is refused in one line, exit 2."""
    stamped = {seed: _start(tmp_path / "stamped", seed) for seed in (1, 2, 3)}
    twins = {seed: _start(tmp_path / "named", seed, "--run-name", "twin") for seed in (4, 5)}
    done = {seed: (p.wait(timeout=600), *p.communicate()) for seed, p in {**stamped, **twins}.items()}

    folders = {}
    for seed in stamped:
        code, out, err = done[seed]
        assert code == 0 and "Traceback" not in err, err
        folders[seed] = Path(out.strip().splitlines()[-1].split("run folder: ")[1])
    assert sorted(f.name for f in folders.values()) == ["20261207-120000", "20261207-120000-1", "20261207-120000-2"]
    for seed, folder in folders.items():
        assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == seed
        assert (folder / "checkpoints" / "last_checkpoint_1.pt").is_file() and (folder / "history.json").is_file()

    codes = sorted(done[seed][0] for seed in twins)
    assert codes == [0, 2], done
    winner, = (seed for seed in twins if done[seed][0] == 0)
    loser, = (seed for seed in twins if done[seed][0] == 2)
    err = done[loser][2].strip()
    assert err.count("\n") == 0 and "Traceback" not in err and f"{tmp_path / 'named' / 'twin'} exists already" in err
    assert yaml.safe_load((tmp_path / "named" / "twin" / "config.yaml").read_text())["seed"] == winner


def _fill(folder: Path) -> None:
    (folder / "config.yaml").write_text("seed: 1\n")


def test_a_taken_name_is_refused_and_a_taken_timestamp_moves_on(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="taken exists already; choose another --run-name"):
        run_folders.claim(tmp_path, "taken", _fill)
    assert (tmp_path / "taken" / "config.yaml").read_text() == "seed: 0\n"  # untouched
    first = run_folders.claim(tmp_path, None, _fill)
    second = run_folders.claim(tmp_path, None, _fill)
    assert second.name == f"{first.name}-1" or second.name > first.name  # the same second, or a later one
    assert (second / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["taken", first.name, second.name])  # no staging


def test_a_claim_whose_first_file_cannot_be_written_leaves_nothing(tmp_path):
    def full(folder: Path) -> None:
        raise MachineError(f"cannot write {folder / 'config.yaml'}: No space left on device")

    with pytest.raises(MachineError, match="No space left"):
        run_folders.claim(tmp_path, "run", full)
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_in_use_cannot_be_locked_twice(tmp_path):
    lock = run_folders.RunLock(tmp_path).acquire()
    try:
        with pytest.raises(ConfigError, match="in use by a run that is still going"):
            run_folders.RunLock(tmp_path).acquire()
    finally:
        lock.release()
    run_folders.RunLock(tmp_path).acquire().release()  # free again once its holder let go


@pytest.mark.parametrize("name, words", [
    ("x" * 300, ["300 bytes long", "at most 255"]),
    ("é" * 200, ["400 bytes long"]),
    ("NUL", ["Windows reserves"]),
    ("com1.txt", ["Windows reserves"]),
])
def test_a_name_a_file_system_refuses_is_refused_before_anything_is_written(name, words, tmp_path, capsys):
    code = cli.main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), "--run-name", name])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err and "run_name" in err, err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_whose_path_is_too_long_is_refused_before_anything_is_written(tmp_path, capsys):
    deep = tmp_path.joinpath(*["d" * 200] * 20)  # about 4,000 bytes: no room left for the files of a run
    code = cli.main(["train", *TINY, "--output-dir", str(deep)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err and "output_dir" in err, err
    assert list(tmp_path.iterdir()) == []
