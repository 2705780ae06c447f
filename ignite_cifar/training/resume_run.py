"""`resume(run, **changes)`: continue a stopped run, as `train --resume RUN` with flags does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ignite_cifar.explain.run_result import RunResult
from ignite_cifar.training.launch import train
from ignite_cifar.training.resume import plan_resume


def resume(run: str | Path, set_aside_damaged: bool = False, **changes: Any) -> RunResult | None:
    """Carry on the stopped run in folder `run` (or from a checkpoint file in it): from its last checkpoint; from the
    start with its config.yaml when it stopped before its first checkpoint; only its completion step (test
    evaluation, figures, explanations) when its training is done.

    Args:
        run: the run folder, or a checkpoint in its checkpoints/ folder.
        set_aside_damaged: rename a damaged newest checkpoint or history.json to `<name>.damaged` and go on from
            the checkpoint before it (or from the start), as `--set-aside-damaged` does.
        changes: config fields to change, as flags given with --resume are (e.g. `epochs=60` to train longer);
            every other field stays as the run saved it.
    """
    plan = plan_resume(str(run), {**changes, "resume": str(run)}, set_aside_damaged)
    return train(plan.config, plan)
