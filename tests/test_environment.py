"""The environment a run records: library versions and the machine's CPU."""

import numpy

from ignite_cifar import environment

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
