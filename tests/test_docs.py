"""The README and docs/ as a reader meets them: every code block runs as printed or is marked
as a fragment, every relative link points at a file, and the README stays a first read."""
import glob
import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

from tests.conftest import REPO

FRAGMENT = re.compile(r"<!-- fragment: .+ -->")
README_MOST_LINES = 250


def documents() -> List[str]:
    return [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]


def code_blocks(path: str) -> List[Tuple[str, str, bool]]:
    """(language, code, marked as a fragment) for every fenced block of a markdown file."""
    lines = open(path).read().split("\n")
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].startswith("```"):
            language = lines[index][3:].strip()
            previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            blocks.append((language, "\n".join(lines[index + 1:end]), bool(FRAGMENT.fullmatch(previous.strip()))))
            index = end
        index += 1
    return blocks


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))


def test_every_block_is_python_that_runs_or_a_marked_fragment() -> None:
    unmarked = [(os.path.relpath(path, REPO), language, code.split("\n")[0])
                for path in documents() for language, code, fragment in code_blocks(path)
                if not fragment and language != "python"]
    assert not unmarked, f"blocks neither executed nor marked <!-- fragment: why -->: {unmarked}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, REPO))
def test_python_blocks_run_as_printed(path: str) -> None:
    for language, code, fragment in code_blocks(path):
        if language == "python" and not fragment:
            result = run_python(code)
            assert result.returncode == 0, f"{os.path.relpath(path, REPO)}:\n{code}\n{result.stderr}"


def test_readme_library_example_prints_what_its_comments_say() -> None:
    code = next(code for language, code, _ in code_blocks(os.path.join(REPO, "README.md")) if language == "python")
    assert run_python(code).stdout.splitlines() == ["80.0% of conv weights remain", "0.200", "[0 2 3]"]


def test_custom_rule_example_selects_every_other_example() -> None:
    code = next(code for language, code, _ in code_blocks(os.path.join(REPO, "docs", "library.md"))
                if "class EveryOther" in code)
    assert run_python(code).stdout.splitlines()[0] == "[0 2 4]"


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_point_at_files(path: str) -> None:
    text = open(path).read()
    folder = os.path.dirname(path)
    broken = [target for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
              if not os.path.exists(os.path.join(folder, target))]
    assert not broken, f"{os.path.relpath(path, REPO)} links to missing files: {broken}"


def test_readme_is_a_first_read() -> None:
    readme = open(os.path.join(REPO, "README.md")).read()
    assert len(readme.split("\n")) <= README_MOST_LINES
    for needed in ("bash demo.sh", "bash test.sh", "main_imp.py", "main_PrAC_imp.py", "main_train.py",
                   "Where the paper's ideas live", "@inproceedings", "github.com/VITA-Group/PrAC-LTH"):
        assert needed in readme


def test_code_map_names_exist() -> None:
    """Every `module.name` in the README's code map is a real attribute."""
    import importlib
    readme = open(os.path.join(REPO, "README.md")).read()
    table = readme[readme.index("## Where the paper's ideas live"):readme.index("## What a run writes")]
    names = {(m, n) for m, n in re.findall(r"`([a-z_]+)\.([A-Za-z_]+)`", table) if n != "py"}
    assert len(names) > 20
    missing = [f"{module}.{name}" for module, name in sorted(names)
               if not os.path.exists(os.path.join(REPO, f"{module}.py")) and module != "models"
               or not hasattr(importlib.import_module(module), name)]
    assert not missing
