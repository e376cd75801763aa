"""The model families by kind: the registry, and the built-in families registered in it.

`register_family` adds a family (a plug-in, a test); `family(kind)` finds one; `TrainConfig.kind`
accepts any registered kind. `MODEL_KINDS` are the built-in kinds, one Dagster model asset each.
"""

from __future__ import annotations

from .family import ModelFamily
from .torch_family import TORCH_FAMILIES
from .xgboost_family import XGBoostFamily

_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add `family` under its kind (again: a no-op); another family under a taken kind is an error."""
    known = _FAMILIES.setdefault(family.kind, family)
    if known is not family:
        raise ValueError(f"model kind {family.kind!r} is already registered, by {type(known).__name__}")
    return family


def family(kind: str) -> ModelFamily:
    try:
        return _FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; registered kinds: {', '.join(_FAMILIES)}") from None


MODEL_KINDS = tuple(register_family(f).kind for f in (*TORCH_FAMILIES, XGBoostFamily()))
