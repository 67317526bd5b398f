import pytest

from registry.adapters import fit_folder


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """One adapter folder per kind of file a version holds: text only, LoRA, soft prompt, prefix."""
    root = tmp_path_factory.mktemp("adapters")
    return {m: fit_folder(m, root / m) for m in ("prompt_template", "lora", "soft_prompt",
                                                  "prefix")}


@pytest.fixture
def reg(tmp_path):
    from tailorlm.registry import Registry

    with Registry(tmp_path / "registry") as r:
        yield r
