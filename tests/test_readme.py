"""The README's first two commands are the ones CI runs."""

from __future__ import annotations

import re

from conftest import REPO


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    first_two = [line for b in blocks[:2] for line in b.strip().splitlines()]
    assert len(first_two) == 2, first_two
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for cmd in first_two:
        assert cmd in ci, f"README command not run by .ci/run: {cmd}"
