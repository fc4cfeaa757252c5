"""Pick one design from a run and write it where it will be trained.

Every rule chooses on validation scores: the confirmed front's validation means when the
run was confirmed, else the search front's single-seed validation scores. Test scores
never decide what is exported.

Formats (``auxsearch export --format``):

* ``design``: a self-contained design file (``auxsearch train``, ``auxsearch.load_design``);
* ``infopro`` / ``auglocal``: the split points as the authors' repositories' table entry
  (``split_tables.py``), a Python literal and YAML, with the aux settings their training
  scripts take; what such a script cannot train is refused with a one-line reason;
* ``script``: one editable training script (``templates/train_script.py.tmpl``) on
  auxsearch's Python API, with the design embedded.
"""

from __future__ import annotations

import datetime as _dt
import string
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from auxsearch.design import split_tables
from auxsearch.design.graph import as_design, design_hash, load_design, save_design
from auxsearch.errors import ConfigError
from auxsearch.outputs.repo_tables import table_entry
from auxsearch.outputs.rows import FrontView, front_view
from auxsearch.outputs.runfolder import load_run, recipe_design
from auxsearch.outputs.tables import mib
from auxsearch.pareto import TrialRecord, find, memory_of, val_mean

FORMATS = ("design", "infopro", "auglocal", "script")
OPTION = {"trial": "--trial", "max_memory": "--max-memory", "knee_point": "--knee", "best_score": "--best-score",
          "allow_dominated": "--allow-dominated"}  # the command-line option of each rule


def choose(records: list[TrialRecord], *, trial: str | int | None = None, max_memory: int | None = None,
           knee_point: bool = False, best_score: bool = False, allow_dominated: bool = False) -> TrialRecord:
    """The record a user asked for: a trial, or a rule over the front (default: best validation score).

    The front and its knee are :func:`~auxsearch.outputs.rows.front_view`'s, the ones every output shows.
    """
    view = front_view(records)
    front = view.front
    if not front:
        raise ConfigError("", "the run has no completed trial yet: nothing to export")
    if trial is not None:
        return _named(view, trial, allow_dominated)
    if max_memory is not None:
        fits = [r for r in front if memory_of(r) <= max_memory]
        if not fits:
            least = min(memory_of(r) for r in front)
            raise ConfigError("--max-memory", f"no front design fits in {mib(max_memory)}; the lightest needs "
                              f"{mib(least)}")
        return max(fits, key=lambda r: (val_mean(r), -memory_of(r)))
    if knee_point:
        return view.knee
    return max(front, key=lambda r: (val_mean(r), -memory_of(r)))


def _named(view: FrontView, trial: str | int, allow_dominated: bool) -> TrialRecord:
    """``--trial``: a completed design; off the front only with ``--allow-dominated``, and the refusal says why."""
    r = find(view.records, trial)
    if r["state"] != "COMPLETE" or r["design"] is None:
        raise ConfigError("--trial", f"trial {r['trial']} is {r['state'].lower()}, not a completed design")
    if allow_dominated or any(f["design_hash"] == r["design_hash"] for f in view.front):
        return r
    on = ", ".join(f["trial"] for f in view.front)
    by = view.dominated_by.get(r["trial"], [])
    if view.kind == "confirmed" and not r.get("confirmed"):
        on_search = any(f["design_hash"] == r["design_hash"] for f in view.search_front)
        why = (f"trial {r['trial']} is unconfirmed: it is on the search front (one seed) but was not retrained with "
               f"seeds; `auxsearch confirm RUN --trial {r['trial']}` confirms it" if on_search else
               f"trial {r['trial']} is unconfirmed and off the search front")
    else:
        why = f"trial {r['trial']} is dominated" + (f" by trial{'s' if len(by) > 1 else ''} {', '.join(by)}" if by else "")
    raise ConfigError("--trial", f"{why}; the {view.kind} front holds trials {on}. Add --allow-dominated "
                      "to export it anyway")


def pick(source: str | Path, **rule) -> tuple[TrialRecord | None, dict[str, Any], str]:
    """``(record, design with its recipe, where from)`` of a run folder, or of a design file as it is."""
    source = Path(source)
    if source.is_file():
        given = [OPTION.get(k, k) for k, v in rule.items() if v not in (None, False)]
        if given:
            raise ConfigError(given[0], f"{source} is a design file, not a run folder: there is no trial to choose")
        return None, as_design(load_design(source)), str(source)
    meta, records = load_run(source)
    rec = choose(records, **rule)
    return rec, recipe_design(rec, meta), f"trial {rec['trial']} of run {meta['name']!r} ({source})"


def export(run_dir: str | Path, output: str | Path, fmt: str = "design", **rule) -> tuple[TrialRecord | None, Path]:
    """Write the chosen design to ``output`` in format ``fmt``; returns (record, path)."""
    rec, design, origin = pick(run_dir, **rule)
    if fmt == "design":
        return rec, save_design(design, output)
    if fmt == "script":
        return rec, write_script(design, output, origin=origin, record=rec)
    if fmt in split_tables.FORMATS:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_entry(design, fmt).render())
        return rec, path
    raise ConfigError("--format", f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# ------------------------------------------------------------------ the training script

TEMPLATE = "train_script.py.tmpl"


def render_script(design: Any, *, origin: str = "", record: TrialRecord | None = None,
                  name: str = "train_best.py") -> str:
    """The training script's text: the template with the design (and its recipe) embedded."""
    d = as_design(design)
    text = resources.files("auxsearch.outputs").joinpath("templates", TEMPLATE).read_text()
    body = yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100).rstrip()
    if "'''" in body:  # cannot happen with plain YAML scalars, but the literal must stay closed
        raise ConfigError("", "the design's YAML contains ''' and cannot be embedded in a script")
    if record is not None:
        c = record.get("confirmed")
        score = (f"validation {c['val']['mean']:.4f} +- {c['val']['std']:.4f}, test {c['test']['mean']:.4f} +- "
                 f"{c['test']['std']:.4f} over {len(c['seeds'])} seeds" if c
                 else f"validation {record['score']:.4f} (one seed)")
    else:
        score = "not scored in a run"
    return string.Template(text).substitute(
        origin=origin or "a design file", design_hash=design_hash(d), K=len(d["splits"]) + 1, score=score,
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), script=name, design_yaml=body)


def write_script(design: Any, output: str | Path, **kw) -> Path:
    path = Path(output)
    if path.is_dir():
        raise ConfigError("--output", f"{path} is a folder; give a file name such as {path / 'train_best.py'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_script(design, name=path.name, **kw))
    return path
