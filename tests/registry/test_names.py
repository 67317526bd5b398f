import pytest

from tailorlm.errors import TailorError
from tailorlm.registry.names import Ref, check_alias, check_name, parse_ref


@pytest.mark.parametrize("text, ref", [
    ("router", Ref("router")),
    ("router:12", Ref("router", version=12)),
    ("router@production", Ref("router", alias="production")),
    ("a.b_c-9", Ref("a.b_c-9")),
    ("x" * 64, Ref("x" * 64)),
])
def test_references(text, ref):
    assert parse_ref(text) == ref and str(ref) == text


@pytest.mark.parametrize("text, message", [
    ("../x", "name '../x' is not valid"),
    ("a/b", "name 'a/b' is not valid"),
    ("router@", "names no alias after '@'"),
    ("x" * 65, "(65 given)"),
    ("x" * 200, "(200 given)"),
    ("Router", "(try 'router')"),
    ("a\x00b", "holds a NUL byte"),
    ("router:0", "the version after ':' is a number from 1"),
    ("router:v2", "the version after ':' is a number from 1"),
    ("router:١", "the version after ':' is a number from 1"),  # a non-ASCII digit
    ("router@3", "all digits"),
    ("", "empty reference"),
    ("-x", "name '-x' is not valid"),
    (".x", "name '.x' is not valid"),
    ("router@Prod", "alias 'Prod' is not valid"),
])
def test_bad_references_say_what_to_write(text, message):
    with pytest.raises(TailorError) as e:
        parse_ref(text)
    assert message in str(e.value) and "\n" not in str(e.value) and "\x00" not in str(e.value)


def test_names_and_aliases():
    assert check_name("support-router") == "support-router"
    assert check_alias("production") == "production"
    for bad in ("a b", "ä", "a\nb", None, 3):
        with pytest.raises(TailorError):
            check_name(bad)


BAD = ["../x", "a/b", "router@", "x" * 200, "Router", "a\x00b"]


@pytest.mark.parametrize("bad", BAD)
def test_the_api_refuses_bad_names_and_changes_nothing(reg, folders, tmp_path, bad):
    reg.push(folders["prompt_template"], "router", alias="production")
    before = (list(reg.db.iterdump()), sorted(reg.store.all_digests()),
              sorted(p.name for p in reg.store.checkouts.iterdir()))
    calls = [lambda: reg.push(folders["lora"], bad), lambda: reg.push(folders["lora"], "router",
                                                                       alias=bad),
             lambda: reg.resolve(bad), lambda: reg.alias(bad, "production", 1),
             lambda: reg.alias("router", bad, 1), lambda: reg.rollback("router", bad),
             lambda: reg.history(bad), lambda: reg.diff(bad, "router:1"),
             lambda: reg.export(bad, tmp_path / "out"), lambda: reg.path(bad)]
    for call in calls:
        with pytest.raises(TailorError) as e:
            call()
        assert "\n" not in str(e.value) and "\x00" not in str(e.value)
    assert (list(reg.db.iterdump()), sorted(reg.store.all_digests()),
            sorted(p.name for p in reg.store.checkouts.iterdir())) == before
    assert not (tmp_path / "out").exists()
