"""Methods that predict the attention graph, behind one registry.

Add a method in three steps:

1. Write ``methods/<name>.py`` with a ``@register("<name>")`` ``@dataclass(kw_only=True)``
   subclass of :class:`Method` (or :class:`Composable`, to get the paper's ``window`` and
   ``global_tokens`` options). Its fields are its parameters: declare ranges with :func:`param`
   (``num_clusters: int = param(8, min=1)``) and mark predict-time knobs with
   :func:`predict_time` (same bounds); they are checked on construction. Set the class-level
   ``tags`` and ``grid`` (``"paper"`` and ``"quick"`` sweeps); implement
   ``_predict(q, k, *, lengths, causal) -> Graph`` and, when it learns, ``fit(train, layer)
   -> self`` storing state in attributes ending in ``_``.
2. Add one import line for the module at the bottom of this file.
3. Run ``pytest tests/test_methods_common.py``: the registry is the test matrix, so the new
   method gets the contract checks for free.

A separate distribution can add methods without touching this package by declaring an entry
point in the group ``sparsebench.methods`` (``name = "module:Class"`` or a module that
registers its classes on import).
"""

from __future__ import annotations

from ._base import (
    MLM_WINDOWS,
    MT_WINDOWS,
    Composable,
    Grid,
    Method,
    Tags,
    param,
    predict_time,
    window_band,
)
from ._checks import (
    NORMALIZERS,
    check_alpha,
    check_normalizer,
    check_qk,
    scoring_dtype,
    to_scoring,
)
from ._errors import SpecError, UnknownNameError, suggest
from ._masks import as_lengths, real_tokens, valid_pairs
from ._registry import (
    ENTRY_POINT_GROUP,
    check_params,
    create,
    from_spec,
    get,
    names,
    parse_spec,
    register,
)
from .gold import attention_logits, attention_probs, gold_graph
from .graph import Graph
from .parts import Band, BlockLayout, DenseMask, Globals, Groups, Part, RowIndex

__all__ = [
    "ENTRY_POINT_GROUP",
    "MLM_WINDOWS",
    "MT_WINDOWS",
    "NORMALIZERS",
    "Band",
    "BlockLayout",
    "Composable",
    "DenseMask",
    "Globals",
    "Graph",
    "Grid",
    "Groups",
    "Method",
    "Part",
    "RowIndex",
    "SpecError",
    "Tags",
    "UnknownNameError",
    "as_lengths",
    "attention_logits",
    "attention_probs",
    "check_alpha",
    "check_normalizer",
    "check_params",
    "check_qk",
    "create",
    "from_spec",
    "get",
    "gold_graph",
    "names",
    "param",
    "parse_spec",
    "predict_time",
    "real_tokens",
    "register",
    "suggest",
    "scoring_dtype",
    "to_scoring",
    "valid_pairs",
    "window_band",
]

# The explicit list of built-in methods: importing a module registers its methods.
from . import (  # noqa: E402, F401
    bigbird,
    dsa,
    longformer,
    openai_fixed,
    oracles,
    reference,
    reformer,
    routing,
    sparsefinder,
    sparsefinder_kmeans,
    window,
)
