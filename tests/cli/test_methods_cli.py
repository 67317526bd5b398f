import dataclasses

from tailorlm.cli.main import main
from tailorlm.methods import METHODS


def test_methods_lists_every_method_with_its_options(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, spec in METHODS.items():
        assert f"\n{name}  ({spec.family}; {spec.side} side;" in "\n" + out
        for f in dataclasses.fields(spec.config):
            assert f"{f.name} = " in out
    assert "r = 8" in out and "rank of each update: 8 is plenty for one task" in out
    assert "n_demos = 4" in out and "more costs prompt tokens on every query" in out
    assert "Training options every learning method has" in out
    assert "Hybrids, WEIGHT+INPUT" in out


def test_one_method_in_full(capsys):
    assert main(["methods", "lora"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lora  (fine tuning; weight side; trains)")
    assert "h = W x + (alpha / r) * B (A x)" in out  # the module's whole description
    assert "epochs = 10" in out and "alpha = 16" in out


def test_a_hybrid_in_full(capsys):
    assert main(["methods", "lora+soft_prompt"]) == 0
    out = capsys.readouterr().out
    assert "variant_field = null" in out and "weight.r = 8" in out
    assert "input.n_virtual = 20" in out


def test_an_unknown_method_is_one_line(capsys):
    assert main(["methods", "lora_x"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'lora_x'" in err and err.count("\n") == 1
