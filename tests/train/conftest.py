"""Fixtures shared by the loader tests (test_data*.py): the prepared demo-shaped data, packed and unpacked,
built once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.test_data import _build


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("packed"), packing=True)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("unpacked"), packing=False)
