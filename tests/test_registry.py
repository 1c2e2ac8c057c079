import pytest

from fmolab.registry import Registry, SpecError, parse_spec


def test_parse_spec_types():
    name, kwargs = parse_spec("AlphaDice:weight=0.5,eps=1e-6,binary=true,mode=gt,n=3")
    assert name == "AlphaDice"
    assert kwargs == {"weight": 0.5, "eps": 1e-6, "binary": True, "mode": "gt", "n": 3}
    assert parse_spec("Plain") == ("Plain", {})


@pytest.mark.parametrize("spec", ["", "A:weight", "A:=3"])
def test_parse_spec_rejects_malformed(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_registry_build_and_errors():
    reg = Registry("loss")

    @reg.register()
    class AlphaDice:
        def __init__(self, weight: float = 1.0, eps: float = 1e-6):
            self.weight, self.eps = weight, eps

    @reg.register("renamed")
    class Other:
        pass

    part = reg.build("AlphaDice:weight=2")
    assert part.weight == 2.0 and part.eps == 1e-6
    assert reg.names() == ["AlphaDice", "renamed"]
    with pytest.raises(SpecError) as err:
        reg.build("AlphaDise")
    assert "Did you mean 'AlphaDice'" in str(err.value) and "renamed" in str(err.value)
    with pytest.raises(SpecError) as err:
        reg.build("AlphaDice:wieght=2")
    assert "wieght" in str(err.value) and "weight, eps" in str(err.value)
    with pytest.raises(ValueError):
        reg.register("AlphaDice")(Other)
