"""Stem-ST: spatial gene expression from H&E with a conditional diffusion model.

``import stem_st as st``::

    adata = st.read.her2st(root, "C2")            # the common section AnnData
    prep = st.prepare({"C2": a2, "C3": a3}, out="prep", holdout=["C3"])
    model, _ = st.StemModel.fit(prep, "run", st.TrainSettings(prep="prep", holdout=["C3"]))
    pred = model.predict_adata(prep.section("C3"))  # a new AnnData: layers['stem_mean'], ['stem_std']

Attributes load lazily, so ``import stem_st`` stays cheap (no torch until a model is used).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"read": ("stem_st.read", None), "prepare": ("stem_st.api", "prepare"), "embed": ("stem_st.api", "embed"),
         "open_prepared": ("stem_st.data.dataset", "open_prepared"),
         "StemModel": ("stem_st.stem", "StemModel"),
         "TrainSettings": ("stem_st.stem", "TrainSettings"),
         "PredictSettings": ("stem_st.stem", "PredictSettings"),
         "get_recipe": ("stem_st.recipe", "get_recipe"), "Recipe": ("stem_st.recipe", "Recipe"),
         "StemError": ("stem_st.errors", "StemError")}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'stem_st' has no attribute '{name}'")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)
