"""auxsearch: search split points and auxiliary networks for supervised local learning.

The Python API a training script needs::

    import auxsearch
    design = auxsearch.load_design("best.yaml")   # a networkx block graph
    model = auxsearch.build(design)                # an nn.Module (LocalNetwork)
    opt, sched = auxsearch.make_optimizer(model, auxsearch.TrainConfig(), total_steps)
    logits, losses = auxsearch.train_step(model, opt, images, labels)
"""

from __future__ import annotations

from .config import TrainConfig
from .engine import (
    LocalNetwork,
    build,
    end_to_end,
    evaluate,
    local_step,
    make_optimizer,
    train_step,
)
from .errors import AuxsearchError, ConfigError
from .families import register_family, registered, unregister_family
from .graph import design_hash, dump_design, from_graph, load_design, save_design, to_graph

__version__ = "0.1.0"
__all__ = [
    "AuxsearchError", "ConfigError", "LocalNetwork", "TrainConfig", "build", "design_hash", "dump_design",
    "end_to_end", "evaluate", "from_graph", "load_design", "local_step", "make_optimizer", "register_family",
    "registered", "save_design", "to_graph", "train_step", "unregister_family",
]
