"""Command outputs quoted in README.md and docs/ are generated, so a changed table cannot mislead a reader.

A quoted output is written between two markers; the command that prints it is in the first::

    <!-- output: auxsearch show docs/examples/quickstart-run -->
    ```text
    ...what the command prints...
    ```
    <!-- end output -->

``python benchmarks/docs_outputs.py`` runs every marked command (from the repository root) and writes
what it prints between the markers; ``--check`` rewrites nothing and exits 1 naming each block that
differs (tests/test_docs.py runs it). Marked commands read committed files only (the run folder
``docs/examples/quickstart-run/`` is a real quickstart run's ``run.yaml`` and journal), so they are
quick and print the same thing on every machine.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- output: (?P<cmd>.+?) -->\n```text\n)(?P<body>.*?)(```\n<!-- end output -->)", re.S)


def run(command: str) -> str:
    argv = shlex.split(command)
    if argv[0] != "auxsearch":
        raise SystemExit(f"a marked command must be an auxsearch command, got {command!r}")
    done = subprocess.run([sys.executable, "-m", "auxsearch", *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{command!r} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout.rstrip("\n") + "\n"


def blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def refresh(check: bool) -> list[str]:
    """Every marked block brought up to date (or, with ``check``, the ones that are not)."""
    stale = []
    for name in FILES:
        path = ROOT / name
        text = path.read_text()
        out, last = [], 0
        for m in blocks(text):
            body = run(m.group("cmd"))
            if body != m.group("body"):
                stale.append(f"{name}: `{m.group('cmd')}`")
            out += [text[last:m.start()], m.group(1), body, m.group(4)]
            last = m.end()
        new = "".join(out) + text[last:]
        if not check and new != text:
            path.write_text(new)
    return stale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 when a quoted output is stale")
    args = ap.parse_args()
    stale = refresh(args.check)
    for s in stale:
        print(("stale: " if args.check else "updated: ") + s)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
