"""Fixtures the integration tests share: the real built-in model, loaded once per module from the
session's shared TAILORLM_HOME (converted from GGUF once per test run)."""

import pytest


@pytest.fixture(scope="module")
def smollm2(smollm2_home_module):
    from tailorlm.models import load_backend

    return load_backend("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2_home_module(smollm2_home):
    mp = pytest.MonkeyPatch()
    mp.setenv("TAILORLM_HOME", str(smollm2_home))
    yield smollm2_home
    mp.undo()
