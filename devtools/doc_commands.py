"""The commands the README and docs/ tell you to type, checked against the tools' own parsers.

Every `dvc`, `spade`, `python -m spade` and `make` command in a fenced shell block (```bash,
```sh, ```shell, ```console, or a plain ``` block) or in an inline `code span` of a Markdown file
is split like a shell would (`$ ` prompts, comments, `&&`, `;`, `|`, `VAR=value` prefixes, line
continuations) and checked without running anything:

- `spade` / `python -m spade`: the subcommand and every flag exist in `spade.__main__`'s
  argparse parser, and a flag's value is one of its choices when it has choices;
- `dvc`: the same against DVC's own parser (`dvc.cli.parser.get_main_parser`), in-process;
- `make`: every target exists in the Makefile;
- `python some/file.py`: the file exists.

Positional values (`my_rough.png`, `<repo-url>`, `…`) are placeholders and are not checked.

    python -m devtools.doc_commands          # list every problem; exit 1 if there is one
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
ENV = re.compile(r"[A-Za-z_]\w*=")  # FOO=1 before a command
WRAPPERS = {"time", "env", "nohup", "sudo", "exec"}
SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}
MAKE_VALUE_FLAGS = {"-C", "-f", "-I", "-o", "-W", "--directory", "--file", "--makefile"}


@dataclass(frozen=True)
class Command:
    doc: str  # e.g. "docs/training.md:97"
    words: tuple[str, ...]  # the tool first: ("dvc", "repro", "train")

    def __str__(self) -> str:
        return f"{self.doc}: {shlex.join(self.words)}"


def docs(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command line) of every fenced shell block and inline code span."""
    for m in FENCE.finditer(text):
        lang = m.group(1).lower()
        if lang not in SHELL_BLOCKS:
            continue
        first = text.count("\n", 0, m.start(2)) + 1
        pending, start = "", first
        for n, line in enumerate(m.group(2).splitlines(), first):
            if lang == "console":  # only prompted lines are commands; the rest is output
                if not line.startswith("$ ") and not pending:
                    continue
                line = line.removeprefix("$ ")
            if not pending:
                start = n
            if line.rstrip().endswith("\\"):  # a continuation: join with the next line
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in INLINE.finditer(outside):
        yield outside.count("\n", 0, m.start()) + 1, m.group(1)


def split(line: str) -> list[list[str]]:
    """A shell line as its simple commands (after `&&`, `;`, `|`), each without `$ `, `VAR=x`
    prefixes or wrappers like `time`; a line the shell could not parse gives none."""
    lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    commands, words = [], []
    for token in [*tokens, ";"]:
        if token in SEPARATORS:
            commands.append(words)
            words = []
        elif words or not (ENV.match(token) or token in WRAPPERS):
            words.append(token)
    return [c for c in commands if c]


def commands(root: Path = ROOT) -> list[Command]:
    """Every dvc / spade / python -m spade / make / python file.py command in the docs."""
    found = []
    for doc in docs(root):
        name = doc.relative_to(root).as_posix()
        for n, line in shell_lines(doc.read_text()):
            for words in split(line):
                tool = Path(words[0]).name
                if tool in ("python", "python3") and words[1:3] == ["-m", "spade"]:
                    words = ["spade", *words[3:]]
                    tool = "spade"
                if tool in ("dvc", "spade", "make", "python", "python3") and len(words) > 1:
                    found.append(Command(f"{name}:{n}", (tool, *words[1:])))
    return found


@cache
def parser(tool: str) -> argparse.ArgumentParser:
    if tool == "spade":
        from spade.__main__ import build_parser

        return build_parser()
    from dvc.cli.parser import get_main_parser

    return get_main_parser()


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return None


def _placeholder(value: str) -> bool:
    return "…" in value or value.startswith("<") or value.startswith("[")


def check_argparse(words: tuple[str, ...], p: argparse.ArgumentParser) -> list[str]:
    """What is wrong with `words` (the tool's name first) for parser `p`: an unknown subcommand,
    an unknown flag, a flag without its value, or a value outside the flag's choices."""
    problems, path = [], [words[0]]
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            options = p._option_string_actions
            action = options.get(name)
            if action is None and not name.startswith("--") and name[:2] in options:
                action, eq, value = options[name[:2]], "=", name[2:]  # -j1: a value attached
            if action is None:
                problems.append(f"`{' '.join(path)}` has no option {name}")
                continue
            if eq or action.nargs == 0:
                values = [value] if eq else []
            elif action.nargs in (None, 1):
                values = rest[:1]
                if not values:
                    problems.append(f"`{' '.join(path)} {name}` needs a value")
                del rest[:1]
            elif action.nargs == "?":
                values = rest[:1] if rest and not rest[0].startswith("-") else []
                del rest[: len(values)]
            else:  # "*", "+", N: up to the next flag
                k = next((i for i, w in enumerate(rest) if w.startswith("-")), len(rest))
                values, rest = rest[:k], rest[k:]
            if action.choices is not None:
                bad = [v for v in values if v not in action.choices and not _placeholder(v)]
                if bad:
                    choices = ", ".join(map(str, action.choices))
                    problems.append(f"`{' '.join(path)} {name}` takes one of {choices}, not {bad}")
            continue
        sub = _subcommands(p)
        if sub is None:  # a positional value: a placeholder
            continue
        if word not in sub:
            problems.append(f"`{' '.join(path)}` has no subcommand {word!r}")
            return problems
        p = sub[word]
        path.append(word)
    return problems


@cache
def make_targets(root: Path = ROOT) -> frozenset[str]:
    text = (root / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))


def _targets(args: list[str]) -> list[str]:
    """The targets of `make ARGS`: not its flags, their values, or VAR=value."""
    targets, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg in MAKE_VALUE_FLAGS:
            del rest[:1]
        elif arg in ("-j", "-l"):  # an optional number
            if rest and rest[0].isdigit():
                del rest[:1]
        elif not arg.startswith("-") and not ENV.match(arg):
            targets.append(arg)
    return targets


def check(command: Command, root: Path = ROOT) -> list[str]:
    """What is wrong with one command (an empty list: nothing)."""
    tool, *args = command.words
    if tool == "make":
        missing = [t for t in _targets(args) if t not in make_targets(root)]
        return [f"the Makefile has no target {t!r}" for t in missing]
    if tool in ("python", "python3"):
        script = args[0]
        if script.startswith("-") or not script.endswith(".py"):
            return []
        return [] if (root / script).is_file() else [f"no file {script}"]
    return check_argparse(command.words, parser(tool))


def problems(root: Path = ROOT) -> list[str]:
    return [f"{c}: {p}" for c in commands(root) for p in check(c, root)]


if __name__ == "__main__":
    found = problems()
    print("\n".join(found) or f"{len(commands())} commands, all of them well-formed")
    sys.exit(1 if found else 0)
