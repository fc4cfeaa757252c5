"""Print pip constraints pinning every dependency of pyproject.toml to its lower bound.

``.ci/run`` installs the project a second time with them (``pip install -c``) and runs the tests
that touch Optuna and torch against the lowest versions the ranges allow.
"""

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
for req in project["dependencies"]:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*([^;#]*)", req)
    name, spec = m.group(1), m.group(2)
    low = re.search(r">=\s*([0-9][0-9A-Za-z.+-]*)", spec)
    if low is None:
        sys.exit(f"{name}: no lower bound in pyproject.toml ({req!r}); every dependency must say what was tested")
    print(f"{name}=={low.group(1)}")
