"""`resume(run, **changes)`: continue a stopped run, as `train --resume RUN` with flags does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ignite_cifar.explain.run_result import RunResult
from ignite_cifar.training.launch import train
from ignite_cifar.training.resume import plan_resume


def resume(run: str | Path, **changes: Any) -> RunResult | None:
    """Continue the run in folder `run` (or from a checkpoint file in it) from its last checkpoint.

    Args:
        run: the run folder, or a checkpoint in its checkpoints/ folder.
        changes: config fields to change, as flags given with --resume are (e.g. `epochs=60` to train longer);
            every other field stays as the run saved it.
    """
    plan = plan_resume(str(run), {**changes, "resume": str(run)})
    return train(plan.config, plan)
