"""The README's two commands are the ones users copy; CI must run the same test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_has_setup_and_test_commands():
    commands = readme_commands()
    assert any("meobench run scenarios/scaling.yaml" in command for command in commands)
    assert any("pytest" in command for command in commands)


def test_ci_runs_the_readme_test_command():
    test_command = next(command for command in readme_commands() if "pytest" in command)
    assert test_command in (ROOT / ".ci" / "run").read_text()
