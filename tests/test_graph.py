from __future__ import annotations

import pytest
import yaml
from conftest import tiny_design

from auxsearch.design.graph import (
    design_hash,
    dump_design,
    from_graph,
    load_design,
    memory_hash,
    normalize,
    save_design,
    to_graph,
)
from auxsearch.errors import ConfigError
from auxsearch.outputs.drawing import design_figure

MAN = {"family": "momentum", "depth": 1, "width": 16, "momentum": 0.99}


def test_round_trip_through_yaml_and_graph(tmp_path):
    d = tiny_design(splits=[1, 3], aux=[MAN, {"family": "dgl", "depth": 2, "width": 8}],
                    train={"epochs": 2}, data={"name": "digits"})
    path = save_design(to_graph(d), tmp_path / "d.yaml")
    g = load_design(path)
    assert from_graph(g) == normalize(d)
    assert from_graph(to_graph(from_graph(g))) == normalize(d)


def test_hash_equal_for_equal_designs_and_different_otherwise():
    a = tiny_design(splits=[2], aux=[{"family": "dgl", "depth": 1, "width": 64}])
    b = tiny_design(splits=[2], aux=[{"family": "dgl"}])  # the same, defaults left out
    assert design_hash(a) == design_hash(b)
    assert design_hash(to_graph(a)) == design_hash(a)
    assert design_hash(tiny_design(splits=[1], aux=[{"family": "dgl"}])) != design_hash(a)
    # the recipe is not part of the design's identity
    assert design_hash(dict(a, train={"epochs": 99})) == design_hash(a)


@pytest.mark.parametrize("entry, key, values, other", [
    (MAN, "momentum", (0.9, 0.999), {"width": 8}),
    ({"family": "dgl", "end": "global_ema"}, "through_momentum", (0.9, 0.999), {"through": "trainable"}),
])
def test_memory_hash_ignores_exactly_the_options_that_cannot_change_memory(entry, key, values, other):
    """The options marked memory_neutral (EMA momenta) leave the measured peak unchanged, so designs that
    differ only there share a memory hash (one oracle call for ehvi); anything else keeps them apart."""
    from auxsearch.design import families
    from auxsearch.train.memory import measure

    marked = {o.name for name in families.family_names() for o in families.all_options(families.family(name))
              if o.memory_neutral}
    assert marked == {"momentum", "through_momentum"}  # a newly marked option must be checked here too
    a, b = (tiny_design(splits=[2], aux=[dict(entry, **{key: v})]) for v in values)
    assert design_hash(a) != design_hash(b)
    assert memory_hash(a) == memory_hash(b)
    assert measure(a, 8) == measure(b, 8)
    assert memory_hash(tiny_design(splits=[1], aux=[dict(entry, **{key: values[0]})])) != memory_hash(a)
    assert memory_hash(tiny_design(splits=[2], aux=[dict(entry, **other, **{key: values[0]})])) != memory_hash(a)


def test_graph_structure_has_modules_aux_and_ema_edges():
    g = to_graph(tiny_design(splits=[2], aux=[MAN]))
    assert {d["module"] for n, d in g.nodes(data=True) if d["kind"] == "unit"} == {0, 1}
    detached = [(u, v) for u, v, e in g.edges(data=True) if e.get("detach")]
    assert detached == [("unit:1", "unit:2")]
    ema = [(u, v, e["momentum"]) for u, v, e in g.edges(data=True) if e["kind"] == "ema"]
    assert ema == [("unit:2", "aux:0", 0.99)]
    for _, d in g.nodes(data=True):
        assert all(isinstance(v, str | int | float | bool) for v in d.values())


@pytest.mark.parametrize("change, key, words", [
    ({"splits": [2, 2], "aux": [{"family": "dgl"}] * 2}, "splits.1", "strictly increasing"),
    ({"splits": [3, 1], "aux": [{"family": "dgl"}] * 2}, "splits.1", "strictly increasing"),
    ({"splits": [4], "aux": [{"family": "dgl"}]}, "splits.0", "< num_units"),
    ({"splits": [0], "aux": [{"family": "dgl"}]}, "splits.0", ">= 1"),
    ({"splits": [2], "aux": []}, "aux", "one aux net per non-final module"),
    ({"splits": [2], "aux": [dict(MAN, momentum=1.0)]}, "aux.0.momentum", "0 < m < 1"),
    ({"splits": [2], "aux": [dict(MAN, momentum=0)]}, "aux.0.momentum", "0 < m < 1"),
    ({"splits": [2], "aux": [{"family": "dgl", "depth": 0}]}, "aux.0.depth", ">= 1"),
    ({"splits": [2], "aux": [{"family": "dgl", "width": 2.5}]}, "aux.0.width", "integer"),
    ({"splits": [2], "aux": [{"family": "nope"}]}, "aux.0.family", "augment, dgl, infopro, momentum"),
    ({"splits": [2], "aux": [{"family": "dgl", "tau": 0.5}]}, "aux.0.tau", "allowed:"),
    ({"splits": [2], "aux": [dict(MAN, recon_first=1.0)]}, "aux.0.recon_first", "head: infopro"),
    ({"splits": [2], "aux": [{"family": "augment", "tau": 1.5}]}, "aux.0.tau", "[0, 1]"),
    ({"num_units": "ten"}, "num_units", "integer"),
    ({"input_shape": [1, 16]}, "input_shape", "[channels, height, width]"),
    ({"bogus": 1}, "bogus", "unknown key"),
])
def test_bad_designs_name_the_key_and_the_rule(change, key, words):
    with pytest.raises(ConfigError) as info:
        normalize(tiny_design(**change))
    assert info.value.key == key
    assert words in str(info.value)


def test_edited_file_with_stale_hash_is_refused(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(dump_design(tiny_design(splits=[2], aux=[{"family": "dgl"}])))
    raw = yaml.safe_load(path.read_text())
    raw["splits"] = [1]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="design_hash"):
        load_design(path)
    raw.pop("design_hash")
    path.write_text(yaml.safe_dump(raw))
    assert from_graph(load_design(path))["splits"] == [1]


def test_bad_yaml_reports_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("backbone: resnet8\nsplits: [1, 2\n")
    with pytest.raises(ConfigError, match="line"):
        load_design(path)


def test_drawing_shows_units_aux_and_ema_links():
    fig = design_figure(tiny_design(splits=[2], aux=[MAN]))
    kinds = {t.name for t in fig.data}
    assert kinds == {"input", "unit", "aux", "head"}
    ema_arrows = [a for a in fig.layout.annotations if a.arrowcolor == "#8E44AD"]
    assert len(ema_arrows) == 1
    cuts = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(cuts) == 1
