"""methods/describe.py reads options, defaults and help from the config classes themselves."""

import dataclasses
from dataclasses import dataclass, field

from tailorlm.methods import METHODS
from tailorlm.methods.contract import MethodConfig
from tailorlm.methods.describe import describe, describe_all, options


@dataclass
class _Base(MethodConfig):
    """Shared options."""

    epochs: int = 5  # passes over the data
    # The step size.
    # Two lines of it.
    lr: float = 1e-3
    quiet: bool = False


@dataclass
class _Child(_Base):
    lr: float = 3e-2  # the child's own reason
    names: list = field(default_factory=lambda: ["a", "b"])
    helped: int = field(default=2, metadata={"help": "from metadata"})  # not this comment
    bare: str = ""


def test_options_read_defaults_and_help_from_the_source():
    got = {o.name: (o.default, o.help, o.owner) for o in options(_Child)}
    assert got == {
        "epochs": (5, "passes over the data", _Base),
        "lr": (3e-2, "the child's own reason", _Child),
        "quiet": (False, "", _Base),
        "names": (["a", "b"], "", _Child),
        "helped": (2, "from metadata", _Child),
        "bare": ("", "", _Child),
    }
    assert {o.name: o.help for o in options(_Base)}["lr"] == "The step size. Two lines of it."


def test_every_method_is_described_with_every_option():
    infos = {i.name: i for i in describe_all()}
    assert set(infos) == set(METHODS)
    for name, info in infos.items():
        fields = [f.name for f in dataclasses.fields(METHODS[name].config)]
        assert [o.name for o in info.options] == fields
        assert info.summary and info.family == METHODS[name].family


# TrainFields (methods/trainable.py) options that have no comment yet: they print as "-".
KNOWN_GAPS = {"epochs", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio"}


def test_every_option_says_what_it_does():
    missing = {o.name for info in describe_all() for o in info.options if not o.help}
    assert missing <= KNOWN_GAPS, f"options without a comment or help=: {missing - KNOWN_GAPS}"


def test_a_hybrid_lists_its_sides_options():
    info = describe("lora+soft_prompt")
    names = [o.name for o in info.options]
    assert names[0] == "variant_field" and "weight.r" in names and "input.n_virtual" in names
    assert {o.name: o.default for o in info.options}["weight.r"] == 8
    assert info.family == "hybrid" and info.trains
