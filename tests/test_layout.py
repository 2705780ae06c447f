"""The package's folders are regular packages that an install ships: a wing without an __init__.py still imports as
a namespace package in a work tree, but import-linter cannot check it and setuptools leaves it out of a wheel."""

from __future__ import annotations

from .helpers import REPO

WINGS = ("data", "model", "training", "explain")


def test_every_folder_of_the_package_is_a_regular_package():
    folders = [p for p in (REPO / "ignite_cifar").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert set(WINGS) <= {p.name for p in folders}
    assert [p for p in folders if not (p / "__init__.py").is_file()] == []
