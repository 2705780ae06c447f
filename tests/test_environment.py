"""The environment a run records: library versions and the machine's CPU."""

import numpy

from ignite_cifar.training import environment

CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC

processor	: 1
model name	: some other core
"""


def test_cpu_name_reads_the_first_processor_with_family_and_model(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert environment.cpu_name(path) == "AMD EPYC (family 25, model 17)"


def test_cpu_name_without_proc_falls_back_to_the_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(environment.platform, "processor", lambda: "arm")
    assert environment.cpu_name(tmp_path / "absent") == "arm"


def test_library_versions_name_every_library_and_say_when_one_is_absent(monkeypatch):
    monkeypatch.setattr(environment, "LIBRARIES", ("numpy", "no-such-distribution-here"))
    versions = environment.library_versions()
    assert versions["numpy"] == numpy.__version__
    assert versions["no-such-distribution-here"] == "not installed"
    assert versions["python"].count(".") == 2


def test_setup_changes_name_each_changed_field_and_skip_what_was_not_recorded():
    before = {"machine": {"cpu": "A", "cpu_kernels": "AVX512"}, "torch_threads": 2, "precision": "bfloat16"}
    now = {"machine": {"cpu": "B", "cpu_kernels": "AVX512"}, "torch_threads": 1, "precision": "bfloat16",
           "versions": {"torch": "2.14.1"}}
    assert environment.setup_changes(before, now) == ["machine.cpu: A -> B", "torch_threads: 2 -> 1"]
    assert environment.setup_changes(now, now) == []
    assert environment.resumed_elsewhere(now, now) is None
    assert "machine.cpu: A -> B" in environment.resumed_elsewhere(before, now)


def test_starts_record_keeps_every_earlier_start_oldest_first():
    first = {"started_after_epoch": 0, "machine": {"cpu": "A"}, "mean": [0.5]}
    second = {"started_after_epoch": 3, "machine": {"cpu": "B"}, "earlier_starts": environment.starts_record(first)}
    assert environment.starts_record(second) == [{"started_after_epoch": 0, "machine": {"cpu": "A"}},
                                                 {"started_after_epoch": 3, "machine": {"cpu": "B"}}]
    assert environment.starts_record({}) == []
    # a run written before starts were recorded: its one earlier start's epoch is unknown
    assert environment.starts_record({"torch_threads": 2}) == [{"started_after_epoch": "unknown", "torch_threads": 2}]


def test_machine_names_the_kernels_and_the_bf16_instructions(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": True}, raising=False)
    assert environment.machine()["cpu_bf16"] == "avx512_bf16, amx_bf16"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True}, raising=False)
    assert environment.machine()["cpu_bf16"] == "none"
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    assert "cpu_bf16" not in environment.machine()  # a torch that cannot tell records nothing, not a guess
    assert environment.machine()["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
