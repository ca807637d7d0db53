"""The README's two commands stay true: CI runs the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README opens with a ```sh block holding the two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("arcpoint demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    assert "pip install" in ci and "'.[test]'" in ci


def test_the_readme_s_outcome_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    """The section a calling service reads: its example must run as printed."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Recording outcomes from a calling service", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the section holds a ```python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    promised = [c.split("# ", 1)[1] for c in code.group(1).splitlines() if "print(" in c]
    assert printed == promised
