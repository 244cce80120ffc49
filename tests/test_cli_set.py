"""One ``--set`` style in every command: ``--set a=1 b=2`` and ``--set a=1 --set b=2``."""

import pytest

from nlrepro.cli import build_parser

# command -> its positional arguments
COMMANDS = {
    "info": [],
    "train": [],
    "sweep": ["experiments/table2a.yaml"],
    "eval": ["results/proxy/adhoc/run"],
    "convert-vnl": ["model.pkl", "out.pt"],
    "attention": ["auto"],
}


def parse(argv: list[str]):
    return build_parser(argv).parse_args(argv)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_several_items_per_set_and_repeated_sets(command):
    positional = COMMANDS[command]
    args = parse([command, *positional, "--set", "a=1", "b.c=2", "--set", "d=[1, 2]"])
    assert args.sets == ["a=1", "b.c=2", "d=[1, 2]"]
    assert parse([command, *positional, "--set", "a=1", "--set", "b=2"]).sets == ["a=1", "b=2"]
    assert parse([command, *positional]).sets == []
    assert parse([command, *positional, "--set=a=1", "--set=b=2"]).sets == ["a=1", "b=2"]
    if positional:  # --set first: the list ends at --
        args = parse([command, "--set", "a=1", "b=2", "--", *positional])
        assert args.sets == ["a=1", "b=2"]


@pytest.mark.parametrize("command", sorted(c for c, p in COMMANDS.items() if p))
def test_a_positional_swallowed_by_set_is_a_usage_error_naming_it(command, capsys):
    positional = COMMANDS[command]
    with pytest.raises(SystemExit) as exc:
        parse([command, "--set", "a=1", *positional])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"expected KEY=VALUE, got {positional[0]!r}" in err
