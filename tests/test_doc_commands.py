"""The commands the README and docs/ tell you to type exist: every `dvc`, `spade`,
`python -m spade` and `make` command in a shell block or code span, checked against the tools'
own parsers without running it (devtools/doc_commands.py)."""

from __future__ import annotations

import textwrap

import pytest

from devtools.doc_commands import ROOT, Command, check, commands, docs, split

ALL = commands()


@pytest.mark.parametrize("doc", docs(), ids=lambda p: p.name)
def test_every_command_in_the_docs_parses(doc):
    name = doc.relative_to(ROOT).as_posix()
    found = [f"{c}: {p}" for c in ALL if c.doc.startswith(f"{name}:") for p in check(c)]
    assert not found, "\n".join(found)


def test_the_docs_have_commands_of_every_tool():
    assert {c.words[0] for c in ALL} >= {"dvc", "spade", "make", "python"}
    assert len(ALL) > 50


@pytest.mark.parametrize(
    "line, problem",
    [
        ("dvc repro -S train.lr_g=1", "`dvc repro` has no option -S"),
        ("dvc exp frobnicate", "`dvc exp` has no subcommand 'frobnicate'"),
        ("dvc exp run -S", "`dvc exp run -S` needs a value"),
        ("spade generate x.png --no-such-flag", "`spade generate` has no option --no-such-flag"),
        ("python -m spade paint x.png", "`spade` has no subcommand 'paint'"),
        ("spade studio --runtime tflite", "`spade studio --runtime` takes one of auto, torch,"),
        ("FOO=1 make no-such-target", "the Makefile has no target 'no-such-target'"),
        ("python bench/no_such_bench.py", "no file bench/no_such_bench.py"),
    ],
)
def test_the_checker_catches_a_wrong_command(line, problem):
    words = split(line)[0]
    if words[:3] == ["python", "-m", "spade"]:
        words = ["spade", *words[3:]]
    found = check(Command("test", tuple(words)))
    assert len(found) == 1 and found[0].startswith(problem), found


@pytest.mark.parametrize(
    "line",
    [
        "dvc exp run --queue -S 'train.lambda_l1=50,100' -S train.lr_g=1e-3",
        "dvc queue start -j1",
        "dvc remote add -d store s3://…",
        "dvc artifacts get <repo-url> face-student",
        "spade generate my_rough.png --seed=3 --runtime onnx --out out/",
        "spade check [file]",
        "make -j2 test-fast",
        "make -j 2 -C . PY=python3.11 lint",
    ],
)
def test_the_checker_accepts_a_right_command(line):
    assert check(Command("test", tuple(split(line)[0]))) == []


def test_split_reads_lines_like_a_shell():
    assert split("$ FOO=1 time dvc repro && make test   # then: make nope") == [
        ["dvc", "repro"],
        ["make", "test"],
    ]
    assert split("git clone <repo> && cd x; dvc pull | tee log") == [
        ["git", "clone", "<repo>"],
        ["cd", "x"],
        ["dvc", "pull"],
        ["tee", "log"],
    ]
    assert split("it's prose, not a command") == []  # an unclosed quote


def test_commands_come_from_shell_blocks_and_code_spans(tmp_path):
    (tmp_path / "Makefile").write_text("repro:\n\ttrue\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        textwrap.dedent(
            """\
            Run `make repro`, then `dvc exp show`; `spade` alone is a name, not a command.

            ```console
            $ python -m spade generate a.png \\
                --seed 3
            dvc output that is not a command
            ```

            ```python
            dvc = "not shell"
            ```

            ```
            make repro   # a plain block
            ```
            """
        )
    )
    found = {(c.doc, c.words) for c in commands(tmp_path)}
    assert found == {
        ("README.md:1", ("make", "repro")),
        ("README.md:1", ("dvc", "exp", "show")),
        ("README.md:4", ("spade", "generate", "a.png", "--seed", "3")),
        ("README.md:14", ("make", "repro")),
    }
