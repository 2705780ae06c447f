"""The whole run's time estimate: its arithmetic on a fake clock, the advice chosen from described machines, and
`train --estimate`, which measures the configured run and writes nothing."""

from __future__ import annotations

import logging

import pytest
from ignite.engine import Engine, Events

from ignite_cifar import cli
from ignite_cifar.training.advice import LONG_RUN_SECONDS, Machine, faster_options
from ignite_cifar.training.estimate import (
    RUN_LEFT,
    Pace,
    RunEstimator,
    Window,
    duration,
    inferred_eval_seconds,
    whole_run,
)

SLOW_CPU = Machine("cpu", cpu_bf16=False, cores=2, width=1.0, precision="fp32")
HOURS = 3600.0


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def timed_engine(clock: FakeClock, warmup_seconds: float = 10.0, step_seconds: float = 1.0,
                 warmup: int = 2) -> Engine:
    """An engine whose steps advance the fake clock: the first `warmup` (counted from where it starts) slow, the
    rest `step_seconds` each."""
    steps = {"done": 0}

    def step(engine, batch):
        clock.now += warmup_seconds if steps["done"] < warmup else step_seconds
        steps["done"] += 1

    return Engine(step)


def attach_epoch_evaluation(engine: Engine, clock: FakeClock, estimator: RunEstimator, seconds: float,
                            notes: list[str]) -> None:
    """What attach_epoch_log does at each epoch's end: evaluate (here: `seconds` on the fake clock), then the
    epoch's line with the estimator's note."""

    @engine.on(Events.EPOCH_COMPLETED)
    def evaluate(_):
        clock.now += seconds
        notes.append(estimator.epoch_note({"val_seconds": seconds}))


def test_first_estimate_leaves_out_the_warm_up_and_infers_the_evaluation():
    clock, lines = FakeClock(), []
    engine = timed_engine(clock)
    estimator = RunEstimator(batch_size=100, eval_images=300, evaluators=2, machine=SLOW_CPU,
                             window=Window(warmup_iterations=2, min_iterations=3, min_seconds=3.0), clock=clock,
                             report=lines.append).attach(engine)
    engine.run(range(10), max_epochs=4)
    first = estimator.first
    assert first.pace.train_per_iteration == 1.0  # the two 10-second warm-up steps are left out
    assert not first.pace.eval_measured
    assert first.pace.eval_per_epoch == pytest.approx(2 * 300 / 100 / 3)  # two forward passes over 300 images
    assert first.seconds == pytest.approx(40 * 1.0 + 4 * 2.0)
    assert first.images_per_s == 100.0 and first.epochs_left == 4
    assert first.basis == "3 steps after 2 warm-up steps"
    assert lines[0].startswith("estimate: the whole run takes about 48 s here: 4 epochs x 12 s")
    assert "inferred" in lines[0] and "faster" not in lines[0]  # a quick run gets no advice


def test_epochs_measured_replace_the_first_estimate_and_the_end_says_what_it_took():
    clock, lines, notes = FakeClock(), [], []
    engine = timed_engine(clock)
    estimator = RunEstimator(100, 300, 1, SLOW_CPU, Window(2, 3, 3.0), clock, lines.append).attach(engine)
    attach_epoch_evaluation(engine, clock, estimator, seconds=5.0, notes=notes)
    engine.run(range(10), max_epochs=4)
    # epoch 1: its measured evaluation, the step's pace after the warm-up; later: the epochs' whole time
    assert notes[0] == f"  | about {duration(3 * (10 + 5))} left"
    assert estimator.pace == Pace(1.0, 5.0, True)
    assert notes[1] == "  | about 30 s left" and notes[2] == "  | about 15 s left" and notes[3] == ""
    assert lines[-1] == f"trained 4 epochs in {duration(2 * 10 + 38 + 4 * 5)}; first estimate: 44 s"


def test_the_progress_bar_shows_the_run_left_once_measured():
    clock = FakeClock()
    engine = timed_engine(clock)
    shown = []
    RunEstimator(100, 300, 1, SLOW_CPU, Window(2, 3, 3.0), clock, None).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: shown.append(getattr(e.state, RUN_LEFT)))
    engine.run(range(10), max_epochs=2)
    assert shown[:4] == ["measuring"] * 4  # two warm-up steps, two measured: the window needs three
    assert shown[4] == duration(15 * 1.0 + 2 * 1.0)  # 15 steps left and two evaluations of 1 s (inferred)


def test_a_resumed_run_counts_only_the_epochs_left():
    clock, lines = FakeClock(), []
    engine = timed_engine(clock)
    estimator = RunEstimator(100, 300, 1, SLOW_CPU, Window(2, 3, 3.0), clock, lines.append).attach(engine)
    engine.load_state_dict({"iteration": 25, "epoch_length": 10, "max_epochs": 4})  # stopped in epoch 3
    engine.run(range(10))
    first = estimator.first
    assert first.epochs_left == 1.5
    assert first.seconds == pytest.approx(15 * 1.0 + 2 * 1.0)  # 15 steps and the evaluations of epochs 3 and 4
    assert "1.50 epochs x" in lines[0]
    assert lines[-1].startswith("trained 1.50 epochs in ")


def test_data_parallel_estimates_count_each_process_s_iterations_and_the_global_batch():
    # two processes: each trains 50 of the global 100 images an iteration, 5 iterations an epoch of 500
    pace = Pace(train_per_iteration=0.5, eval_per_epoch=inferred_eval_seconds(0.5, 100, 1000, 1), eval_measured=False)
    estimate = whole_run(pace, max_epochs=10, epoch_length=5, start_iteration=20, batch_size=100, basis="test",
                         machine=SLOW_CPU)
    assert estimate.images_per_s == 200.0
    assert estimate.epochs_left == 6
    assert estimate.seconds == pytest.approx(6 * (5 * 0.5 + 1000 * 0.5 / 100 / 3))


@pytest.mark.parametrize(("machine", "hours", "expected"), [
    (SLOW_CPU, 45, ["--width 0.25 (about 16x fewer multiply-adds)", "a GPU (--device cuda)"]),
    (Machine("cpu", True, 32, 1.0, "fp32"), 5, ["--width 0.25 (about 16x fewer multiply-adds)",
                                                "--amp auto (bf16: this CPU computes it natively)",
                                                "a GPU (--device cuda)"]),
    (Machine("cpu", True, 32, 1.0, "bfloat16"), 5, ["--width 0.25 (about 16x fewer multiply-adds)",
                                                    "a GPU (--device cuda)"]),
    (Machine("cpu", False, 2, 0.25, "fp32"), 3, ["a GPU (--device cuda)"]),
    (Machine("cuda", False, 8, 1.0, "bfloat16"), 3, ["--width 0.25 (about 16x fewer multiply-adds)"]),
    (Machine("cuda", False, 8, 1.0, "fp32"), 3, ["--width 0.25 (about 16x fewer multiply-adds)",
                                                 "--amp auto (bf16 or fp16 autocast on the GPU)"]),
    (SLOW_CPU, 1.5, []),  # quick enough: nothing
    (Machine("cuda", False, 8, 1.0, "bfloat16"), 0.5, []),
])
def test_advice_is_chosen_from_the_machine_and_only_for_a_long_run(machine, hours, expected):
    assert faster_options(machine, hours * HOURS) == expected


def test_advice_starts_at_the_long_run_threshold():
    assert faster_options(SLOW_CPU, LONG_RUN_SECONDS - 1) == []
    assert faster_options(SLOW_CPU, LONG_RUN_SECONDS)


def test_the_line_names_what_is_faster_for_a_long_run():
    estimate = whole_run(Pace(10.0, 60.0, True), 40, 391, 0, 128, "3 steps after 2 warm-up steps", SLOW_CPU)
    line = estimate.line()
    assert line.startswith("estimate: the whole run takes about 44.1 h here: 40 epochs x 66 min")
    assert "12.8 images/s, fp32 on a 2-core CPU" in line
    assert line.endswith(". Faster: --width 0.25 (about 16x fewer multiply-adds); a GPU (--device cuda)")


TINY = ["--dataset", "synthetic", "--width", "0.0625", "--batch-size", "50", "--train-subset", "300",
        "--test-subset", "100", "--num-workers", "0", "--amp", "off", "--ema-decay", "0", "--probe-every", "0"]


def test_estimate_writes_nothing_and_a_resumed_run_counts_its_epochs_left(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="ignite_cifar")
    assert cli.main(["train", *TINY, "--epochs", "3", "--output-dir", "never", "--estimate"]) == 0
    assert list(tmp_path.iterdir()) == []  # no run folder, no --output-dir
    assert "estimate: the whole run takes about" in caplog.text and "3 epochs x" in caplog.text

    caplog.clear()
    assert cli.main(["train", *TINY, "--epochs", "1", "--output-dir", "runs", "--run-name", "one",
                     "--no-explain-at-end"]) == 0
    # the run itself: an epoch of 6 steps is shorter than the window, so the estimate rests on it
    assert "estimate: the whole run takes about" in caplog.text and "the first epoch, warm-up included" in caplog.text
    assert "trained 1 epoch in" in caplog.text and "first estimate:" in caplog.text
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    caplog.clear()
    assert cli.main(["train", "--resume", "runs/one", "--epochs", "3", "--estimate"]) == 0
    assert "2 epochs x" in caplog.text  # one of three done
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_estimate_refuses_what_the_run_would_refuse_in_one_line(tmp_path, capsys):
    assert cli.main(["train", "--estimate", "--resume", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.parametrize(("seconds", "text"), [(40, "40 s"), (270, "4.5 min"), (1020, "17 min"),
                                               (45 * HOURS, "45.0 h")])
def test_durations_read_as_a_wait(seconds, text):
    assert duration(seconds) == text


def test_the_window_waits_for_the_device_at_both_ends():
    clock, synced = FakeClock(), []

    def sync():  # the device was behind: waiting for it takes 1 s at the window's start, 3 s at its end
        synced.append(clock.now)
        clock.now += 1.0 if len(synced) == 1 else 3.0

    engine = timed_engine(clock)
    estimator = RunEstimator(100, 300, 1, SLOW_CPU, Window(2, 3, 3.0), clock, None, sync).attach(engine)
    engine.run(range(10), max_epochs=1)
    assert len(synced) == 2
    # from after the first wait (the warm-up's queued work) to after the last (the window's own)
    assert estimator.first.pace.train_per_iteration == pytest.approx((3 * 1.0 + 3.0) / 3)
