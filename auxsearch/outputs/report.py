"""The interactive HTML report of a run (one self-contained file, plotly.js inlined, opens offline).

It leads with the front a user chooses from: the confirmed front (validation mean +- std over
fresh seeds, test beside it) when confirmation ran, else the single-seed search front marked
unconfirmed. It names one knee, the one ``auxsearch export --knee`` writes
(:class:`~auxsearch.outputs.rows.FrontView`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from auxsearch.errors import ConfigError
from auxsearch.outputs.figures import esc, hypervolume_figure, params_figure, pareto_figure
from auxsearch.outputs.rows import FrontView, families, front_view, modules
from auxsearch.outputs.tables import MIB, confirmed_rows, metric_label, num, pm, search_rows
from auxsearch.pareto import TrialRecord, memory_of
from auxsearch.pareto import finite as _finite

__all__ = ["write_report"]

STATES = ("COMPLETE", "PRUNED", "INFEASIBLE", "FAIL", "RUNNING")
_LEFT = ("trial", "families", "design", "note")

_CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h2{margin-top:36px;border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:14px}th{background:#f5f5f5}
th,td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:right}td.t,th.t{text-align:left}.meta{color:#444}
tr.e2e{background:#fff4e0}tr.knee{background:#e6f0fa}.empty{padding:12px;background:#fff4e0}code{background:#f3f3f3}
.lead{font-size:17px;padding:10px 14px;background:#eef4fb;border-left:4px solid #4C78A8}"""

_CONFIRMED_TEXT = (
    "The search front's designs and the E2E reference, retrained with fresh seeds under the same recipe. "
    "Validation chose them; test is read here for the first time. A design is dominated only when another "
    "needs no more memory and its validation mean minus std exceeds this one's mean plus std: a gap inside "
    "the seeds' spread is noise. Export rules (--knee, --best-score, --max-memory) use the confirmed validation means.")

_HOW_TO_READ = (
    "Scores are on the validation split (the search never reads test). Further left needs less peak training "
    "memory (the lower axis in MiB from 0, the upper one in multiples of the end-to-end reference's peak); higher "
    "is a better {metric}. {front} The orange star is the end-to-end reference (K = 1, plain backprop, same "
    "recipe). Grey dots are single-seed search trials, red crosses pruned trials at their last reported {metric}, "
    "hollow circles designs the memory budget (dashed line) rejected before training, at their simulated peak. "
    "The knee is the front's natural compromise, the design farthest from the line joining the front's two ends; "
    "`auxsearch export --knee` writes the same one. The hypervolume is the area the search front dominates with "
    "both axes scaled to [0, 1]; where its curve stays flat, the search stopped finding better trade-offs.")
_FRONT_CONFIRMED = ("Blue diamonds joined by the step line are the confirmed front at their validation mean, with "
                    "bars of +- one standard deviation over seeds; hollow green diamonds are confirmed designs the "
                    "front dominates beyond the spread.")
_FRONT_SEARCH = ("The dotted blue step line is the search front: single-seed scores, not yet confirmed "
                 "(`auxsearch confirm RUN` retrains it with fresh seeds).")


def _lead(view: FrontView, metric: str) -> str:
    """One sentence at the top: the knee, its confirmed score against E2E's, its memory share."""
    if view.knee is None:
        return "<p class='empty'>No trial has completed yet, so there is no front.</p>"
    k, e = view.knee, view.e2e
    share = f"{memory_of(k) / view.e2e_peak:.2f}x E2E's peak memory" if view.e2e_peak else "(no E2E reference yet)"
    if view.kind == "confirmed":
        score = f"validation {pm(k['confirmed']['val'])}, test {pm(k['confirmed']['test'])}"
        ref = (f"; E2E: validation {pm(e['confirmed']['val'])}, test {pm(e['confirmed']['test'])}"
               if e is not None and e.get("confirmed") else "")
        kind = f"confirmed over {len(k['confirmed']['seeds'])} seeds"
    else:
        score = f"validation {num(k['score'])} (one seed, unconfirmed)"
        ref = f"; E2E: validation {num(e['score'])} (one seed)" if e is not None else ""
        kind = "unconfirmed"
    return (f"<p class='lead'>Knee: <b>trial {esc(k['trial'])}</b> (K = {modules(k)}, {esc(families(k['design']))}), "
            f"{esc(metric)} {score}, at {share}{ref}; {kind}.</p>")


def _header(view: FrontView, meta: Mapping[str, Any]) -> str:
    counts = Counter(str(r.get("state")) for r in view.records)
    order = [s for s in STATES if counts[s]] + sorted(s for s in counts if s not in STATES)
    states = " &middot; ".join(f"{esc(s)} {counts[s]}" for s in order) or "none"
    budget = meta.get("memory_budget_bytes")
    metric = esc(metric_label(meta.get("metric", "score")))
    fails = "".join(f"<li>trial {esc(r['trial'])}: {esc(r.get('reason') or 'no reason recorded')}</li>"
                    for r in view.records if r.get("state") == "FAIL")
    missing = "" if view.e2e is not None else f"<p class='empty'>No E2E reference: {esc(view.no_e2e_why())}</p>\n"
    return (f"<h1>auxsearch: {esc(meta.get('name', 'study'))}</h1>\n<p class='meta'>maximise <b>{metric}</b>, "
            f"minimise peak training memory (<b>{esc(meta.get('memory_mode', '?'))}</b>)"
            + (f", budget {budget / MIB:.1f} MiB" if _finite(budget) else "")
            + f" &middot; created {esc(meta.get('created', '?'))}</p>\n"
            f"<p class='meta'>command: <code>{esc(meta.get('command', '?'))}</code></p>\n"
            f"<p class='meta'>{len(view.records)} trials: {states}</p>\n" + missing
            + (f"<details><summary>failed trials</summary><ul>{fails}</ul></details>\n" if fails else "")
            + _lead(view, metric))


def _html_table(header: list[str], rows: list[tuple[list[str], str]]) -> str:
    lines = [("", "th", header)] + [("e2e" if "E2E" in n else "knee" if "knee" in n else "", "td", [*c, n])
                                    for c, n in rows]
    return "<table>\n" + "\n".join(f"<tr class='{cls}'>" + "".join(
        f"<{tag} class='{'t' if header[i] in _LEFT else ''}'>{esc(c)}</{tag}>" for i, c in enumerate(cells)) + "</tr>"
        for cls, tag, cells in lines) + "\n</table>"


def _drawings(view: FrontView, metric: str) -> list[str | go.Figure]:
    from auxsearch.outputs.drawing import design_figure  # networkx: only the report needs it

    out: list[str | go.Figure] = ["<p class='meta'>Units coloured by module; red dashes cut the gradient, "
                                  "aux nets hang below, purple arrows are EMA links.</p>"]
    for r in (r for r in view.front if r.get("design")):
        c = r.get("confirmed")
        score = (f"val {pm(c['val'])} over {len(c['seeds'])} seeds" if c else f"val {num(r['score'])} (one seed)")
        title = (f"trial {esc(r['trial'])}{' (knee)' if view.is_knee(r) else ''}: K = {modules(r)}, "
                 f"{esc(families(r['design']))}, {esc(metric)} {score}, {memory_of(r) / MIB:.1f} MiB")
        try:
            out.append(design_figure(r["design"], title=title))
        except ConfigError as exc:  # one unreadable design must not cost the whole report
            out.append(f"<p class='empty'>trial {esc(r['trial'])}: design not drawable ({esc(exc)})</p>")
    return out


def _render(parts: Sequence[str | go.Figure]) -> str:
    """HTML of the parts; plotly.js is inlined in the first figure only (the page works offline)."""
    out, bundled = [], False
    for p in parts:
        if isinstance(p, go.Figure):
            p = p.to_html(full_html=False, include_plotlyjs=not bundled, config={"displaylogo": False})
            bundled = True
        out.append(p)
    return "\n".join(out)


def write_report(records: FrontView | Sequence[TrialRecord], meta: Mapping[str, Any], path: str | Path) -> Path:
    """Write one self-contained HTML report and return its path."""
    view = records if isinstance(records, FrontView) else front_view(records)
    metric = metric_label(meta.get("metric", "score"))
    front_words = _FRONT_CONFIRMED if view.kind == "confirmed" else _FRONT_SEARCH
    parts: list[str | go.Figure] = [_header(view, meta)]
    if any(_finite(r.get("peak_memory_bytes")) for r in view.records):
        parts += ["<h2>" + ("Confirmed front" if view.kind == "confirmed" else "Search front (unconfirmed)") + "</h2>",
                  pareto_figure(view, meta)]
    if view.confirmed:
        parts += ["<h2>Confirmed designs</h2>", f"<p class='meta'>{_CONFIRMED_TEXT}</p>",
                  _html_table(*confirmed_rows(view, metric))]
    if view.search_front:
        parts += ["<h2>Search front (one seed, validation)</h2>",
                  "<p class='meta'>What the search saw; it chose what was confirmed.</p>" if view.confirmed else "",
                  _html_table(*search_rows(view, metric)),
                  "<h2>How to read this</h2>", f"<p>{_HOW_TO_READ.format(metric=esc(metric), front=front_words)}</p>",
                  "<h2>Hypervolume history</h2>", hypervolume_figure(view, metric),
                  "<h2>Parameters</h2>", params_figure(view, metric),
                  "<h2>Front designs</h2>", *_drawings(view, metric)]
    title = esc(f"auxsearch: {meta.get('name', 'study')}")
    page = (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<title>{title}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n{_render(parts)}\n</body>\n</html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
