"""Fixtures for the TRIBE backend tests: the ``tribev2`` test double on sys.path and a fake checkpoint
folder (helpers for stimuli live in tribe_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


from tribe_helpers import DOUBLES, is_double_module as _is_double_module  # noqa: F401 (shared with tests)


@pytest.fixture
def tribe_double(monkeypatch):
    """Import ``tribev2`` (and its ``neuralset``/``exca`` doubles) from tests/doubles, forget them afterwards."""
    for name in [m for m in sys.modules if _is_double_module(m)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(DOUBLES))
    import tribev2

    assert getattr(tribev2, "IS_TEST_DOUBLE", False)
    yield tribev2
    for name in [m for m in sys.modules if _is_double_module(m)]:
        sys.modules.pop(name, None)


@pytest.fixture
def checkpoint_dir(tmp_path):
    folder = tmp_path / "tribev2-snapshot"
    folder.mkdir()
    (folder / "config.yaml").write_text("# test double checkpoint\n")
    (folder / "best.ckpt").write_bytes(b"\0")
    return folder
