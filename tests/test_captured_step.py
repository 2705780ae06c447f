"""The captured step (--compile --compile-mode reduce-overhead): the lr lives in one tensor per param group that every
schedule changes in place, so a compiled (on a GPU, CUDA-graph captured) optimizer step uses each new lr without
recompiling. CUDA graphs themselves need a GPU; benchmarks/speed/captured_lr_check.py checks them there."""

import shutil

import pytest
import torch
from ignite.engine import Events
from torch import nn

from ignite_cifar.training.captured_step import LrPlacement, captures_step, optimizer_step
from ignite_cifar.training.engines import create_trainer
from ignite_cifar.training.schedules import Plateau, PlateauScheduler, attach_warmup

CPU = torch.device("cpu")


def adam_on(model: nn.Module, lr: float = 0.1) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=lr)


def test_only_the_reduce_overhead_mode_captures_the_step():
    assert captures_step(True, "reduce-overhead")
    assert not captures_step(True, "default") and not captures_step(False, "reduce-overhead")


def test_every_way_of_setting_the_lr_lands_in_the_groups_own_tensor():
    optimizer = adam_on(nn.Linear(3, 2))
    placement = LrPlacement(optimizer, CPU, captured=True)
    held = optimizer.param_groups[0]["lr"]
    assert isinstance(held, torch.Tensor) and float(held) == pytest.approx(0.1)
    assert optimizer.param_groups[0]["capturable"] is False  # CUDA only; eager CPU Adam refuses it

    optimizer.param_groups[0]["lr"] = 0.05  # what ignite's warmup and --lr on resume do
    placement.settle()
    assert optimizer.param_groups[0]["lr"] is held and float(held) == pytest.approx(0.05)

    plateau = PlateauScheduler(optimizer, Plateau(patience=0))
    for loss in (1.0, 2.0):  # no improvement at the second: a cut, which torch writes into the tensor
        plateau.scheduler.step(loss)
    assert optimizer.param_groups[0]["lr"] is held and float(held) == pytest.approx(0.005)

    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = torch.tensor(0.2)  # a checkpoint's own tensor
    optimizer.load_state_dict(state)
    placement.settle()
    assert optimizer.param_groups[0]["lr"] is held and float(held) == pytest.approx(0.2)


def test_an_eager_step_gets_float_lrs_back_from_a_captured_runs_checkpoint():
    optimizer = adam_on(nn.Linear(3, 2))
    optimizer.param_groups[0]["lr"] = torch.tensor(0.03)
    optimizer.param_groups[0]["capturable"] = True
    LrPlacement(optimizer, CPU, captured=False)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03) and isinstance(optimizer.param_groups[0]["lr"], float)
    assert optimizer.param_groups[0]["capturable"] is False


def test_the_warmup_changes_the_lr_the_step_reads_at_every_iteration():
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # eager SGD accepts a tensor lr (Adam only compiled)
    data = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(6)]
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(), CPU)
    warmup = attach_warmup(trainer, optimizer, 1.0, epochs=1, epoch_length=len(data),
                           plateau=PlateauScheduler(optimizer, Plateau()))
    placement = LrPlacement(optimizer, CPU, captured=True).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: seen.append(
        (optimizer.param_groups[0]["lr"] is placement.tensors[0], float(placement.tensors[0]))))
    trainer.run(data, max_epochs=2)
    assert all(is_held for is_held, _ in seen)
    lrs = [lr for _, lr in seen]
    assert lrs[:6] == pytest.approx([0.1 + 0.15 * i for i in range(6)])  # from lr/10 by (lr - lr/10) / 6 a step
    assert lrs[6:] == pytest.approx([1.0] * 6)
    assert warmup.event_index == 6


def has_cxx_compiler() -> bool:
    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile on a CPU needs a C++ compiler")
def test_the_compiled_step_follows_lr_changes_without_recompiling():
    """The compiled Adam step on tensor lrs equals eager Adam on the same lrs, step by step, and compiles once; an
    eager Adam that kept the first lr (what a step that baked its lr in would do) ends far from both."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    compiled_model, eager_model, frozen_model = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)
    eager_model.load_state_dict(compiled_model.state_dict())
    frozen_model.load_state_dict(compiled_model.state_dict())
    compiled_opt, eager_opt, frozen_opt = adam_on(compiled_model), adam_on(eager_model), adam_on(frozen_model)
    placement = LrPlacement(compiled_opt, CPU, captured=True)
    compiled_step = optimizer_step(compiled_opt, captured=True)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    graphs = []
    for lr in (0.1, 0.1, 0.01, 0.001):  # a warmup-style float write, then cuts
        compiled_opt.param_groups[0]["lr"] = lr
        placement.settle()
        eager_opt.param_groups[0]["lr"] = lr
        for model, optimizer, step in ((compiled_model, compiled_opt, compiled_step),
                                       (eager_model, eager_opt, eager_opt.step),
                                       (frozen_model, frozen_opt, frozen_opt.step)):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            step()
        graphs.append(counters["stats"]["unique_graphs"])
        # Inductor's fused kernel rounds differently from eager foreach Adam: a few 1e-6 after four steps.
        torch.testing.assert_close(compiled_model.weight, eager_model.weight, rtol=0, atol=1e-5)
    assert graphs[1:] == [graphs[0]] * 3  # the lr changes recompiled nothing
    assert (frozen_model.weight - compiled_model.weight).abs().max() > 0.1


def test_a_trainer_given_a_step_calls_it_instead_of_the_optimizers():
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def counted_step():
        calls.append(1)
        optimizer.step()

    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(), CPU, optimizer_step=counted_step,
                             captured=True)
    before = model.weight.detach().clone()
    trainer.run([(torch.randn(2, 4), torch.tensor([0, 2]))] * 3, max_epochs=1)
    assert len(calls) == 3 and not torch.equal(before, model.weight)
