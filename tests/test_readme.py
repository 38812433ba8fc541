"""The README's library example (a custom selection rule) runs as printed."""
import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_readme_custom_rule_example_runs() -> None:
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "class EveryOther" in b]
    assert len(blocks) == 1
    result = subprocess.run([sys.executable, "-c", blocks[0]], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[0 2 4]"
