"""auxsearch: search split points and auxiliary networks for supervised local learning.

The Python API a training script needs::

    import auxsearch
    design = auxsearch.load_design("best.yaml")   # a networkx block graph
    model = auxsearch.build(design)                # an nn.Module (LocalNetwork)
    opt, sched = auxsearch.make_optimizer(model, auxsearch.TrainConfig(), total_steps)
    logits, losses = auxsearch.train_step(model, opt, images, labels)

Each name is imported from its layer on first use, so ``import auxsearch`` (and the command line's
``--help``) costs no torch until a name that needs it is read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from auxsearch.version import __version__

# public name -> the module that defines it
_API = {
    "TrainConfig": "auxsearch.config",
    "AuxsearchError": "auxsearch.errors", "ConfigError": "auxsearch.errors",
    "register_family": "auxsearch.design.families", "registered": "auxsearch.design.families",
    "unregister_family": "auxsearch.design.families",
    **dict.fromkeys(("design_hash", "dump_design", "from_graph", "load_design", "save_design", "to_graph"),
                    "auxsearch.design.graph"),
    **dict.fromkeys(("LocalNetwork", "build", "end_to_end", "evaluate", "local_step", "make_optimizer", "train_step"),
                    "auxsearch.model.engine"),
}
__all__ = [
    "AuxsearchError", "ConfigError", "LocalNetwork", "TrainConfig", "__version__", "build", "design_hash",
    "dump_design", "end_to_end", "evaluate", "from_graph", "load_design", "local_step", "make_optimizer",
    "register_family", "registered", "save_design", "to_graph", "train_step", "unregister_family",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from auxsearch.config import TrainConfig
    from auxsearch.design.families import register_family, registered, unregister_family
    from auxsearch.design.graph import (
        design_hash,
        dump_design,
        from_graph,
        load_design,
        save_design,
        to_graph,
    )
    from auxsearch.errors import AuxsearchError, ConfigError
    from auxsearch.model.engine import (
        LocalNetwork,
        build,
        end_to_end,
        evaluate,
        local_step,
        make_optimizer,
        train_step,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'auxsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
