"""Every command the README, the training guide, the results README and the model card show parses as written.

A reader copies these lines; an option renamed in the code, or a launcher that reads one of our options as its
own (torchrun took `--run` for its `--run-path`), must fail here rather than on the reader's machine.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from fovcompletion.cli import attach_dash_values, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (
    "README.md",
    "docs/training.md",
    "docs/results/README.md",
    "FOVCompletion/Resources/Models/fovcompletion-spine-t2w-window/MODEL_CARD.md",
)
FENCED = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for each `fovcompletion` or `torchrun` command in a fenced block, continuation lines
    joined, comments dropped, optional parts `[...]` taken as given."""
    found = []
    for name in DOCUMENTS:
        for block in FENCED.findall((ROOT / name).read_text(encoding="utf-8")):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in line.split(" #")[0].split("&&"):
                    command = re.sub(r"\[([^\]]*)\]", r"\1", part).strip()
                    if command.startswith(("fovcompletion ", "torchrun ")):
                        found.append((name, command))
    return found


COMMANDS = documented_commands()


def parse(argv: list[str]) -> None:
    build_parser().parse_args(attach_dash_values(argv))


def test_the_documents_show_commands_of_every_kind():
    kinds = {
        command.split()[0] if command.startswith("torchrun") else command.split()[1]
        for _, command in COMMANDS
    }
    assert {
        "torchrun",
        "complete",
        "train-autoencoder",
        "train-diffusion",
        "export-bundle",
        "benchmark",
    } <= kinds


@pytest.mark.parametrize(("document", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_a_documented_command_parses(document, command):
    words = shlex.split(command)
    try:
        if words[0] == "torchrun":
            launch = get_args_parser().parse_args(words[1:])
            assert launch.module and launch.training_script == "fovcompletion", command
            arguments = launch.training_script_args
            parse(arguments[1:] if arguments[:1] == ["--"] else arguments)
        else:
            parse(words[1:])
    except SystemExit as exit:
        pytest.fail(f"{document}: `{command}` does not parse (exit {exit.code})")
