"""Every example in every ``driftline.detectors`` module runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import driftline.detectors
import numpy as np
import pytest

MODULES = sorted(
    f"{driftline.detectors.__name__}.{info.name}"
    for info in pkgutil.iter_modules(driftline.detectors.__path__)
)


def test_every_module_is_listed() -> None:
    # Guards the sweep below against a package path that silently lists nothing.
    assert "driftline.detectors.base" in MODULES
    assert "driftline.detectors.bank" in MODULES


@pytest.mark.parametrize("name", ["driftline.detectors", *MODULES])
def test_module_doctests_pass(name: str) -> None:
    module = importlib.import_module(name)
    # Pin numpy's repr so examples print the same under any numpy print options.
    with np.printoptions(legacy=False):
        result = doctest.testmod(
            module,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False,
            report=True,
        )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
