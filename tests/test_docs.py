"""Every command the README and docs show exists and parses; every YAML example validates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from auxsearch.cli import build_parser
from auxsearch.config import StudyConfig, from_mapping
from auxsearch.design.graph import normalize
from auxsearch.design.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(lang: str) -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for body in re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S):
            out.append((page.name, body))
    return out


def commands() -> list[tuple[str, str]]:
    found = []
    for page, body in blocks("bash"):
        for line in body.splitlines():
            line = line.split(" #")[0].strip()
            line = re.sub(r"^(CUDA_VISIBLE_DEVICES=\S+\s+)", "", line)
            if line.startswith("auxsearch "):
                found.append((page, line.replace("$URL", "postgresql://u@h/db")))
    return found


def test_the_docs_show_commands():
    assert len(commands()) >= 10


@pytest.mark.parametrize("page, line", commands(), ids=[f"{p}:{c[:40]}" for p, c in commands()])
def test_every_documented_command_parses(page, line):
    parser = build_parser()
    args = shlex.split(line)[1:]
    parser.parse_args(args)  # argparse exits with 2 on an unknown command or option
    with pytest.raises(SystemExit) as info:
        parser.parse_args([args[0], "--help"])
    assert info.value.code == 0


@pytest.mark.parametrize("page, body", blocks("yaml"), ids=[p for p, _ in blocks("yaml")])
def test_every_yaml_example_validates(page, body):
    raw = yaml.safe_load(body)
    if "num_units" in raw:
        normalize({k: v for k, v in raw.items() if k != "design_hash"})
    elif "families" in raw or "modules" in raw:
        parse_space(raw)
    else:
        from_mapping(StudyConfig, raw, "")


def test_shipped_search_spaces_parse():
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        parse_space(yaml.safe_load(path.read_text()), path.name)


def test_study_reference_doc_matches_the_code():
    from auxsearch.outputs.docgen import render

    doc = ROOT / "docs" / "study-reference.md"
    assert doc.read_text() == render(), "regenerate: python -m auxsearch.outputs.docgen > docs/study-reference.md"
