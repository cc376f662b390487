import pytest

from executor.wire.names import check_name, name_problem


@pytest.mark.parametrize("name", ["a", "A1", "my-tool", "data.set_2", "x" * 128, "0day"])
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-rf",
        ".hidden",
        "a/b",
        "../etc",
        "a..b",
        "x" * 129,
        "with space",
        "semi;colon",
        "end.",
        "x.lock",
        "é",
        None,
        3,
    ],
)
def test_invalid_names(name: object) -> None:
    assert name_problem(name) is not None
    with pytest.raises(ValueError):
        check_name(name)
