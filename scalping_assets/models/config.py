"""One typed config per training: model kind and size, optimisation, sampling, seed, the family's
own hyper-parameters; two profiles."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from .families import MODEL_KINDS as MODEL_KINDS  # re-exported: the built-in kinds
from .families import family


class TrainConfig(BaseModel):
    kind: str = Field(description="a registered model family (families.register_family)")
    seed: int = 0
    # torch models
    hidden: int = Field(default=64, ge=1)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    kernel: int = Field(default=5, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    patience: int = Field(default=3, ge=1, description="epochs without a better validation loss before stopping")
    # Plain cross-entropy by default: the probabilities are traded on (`min_confidence`), and both
    # options bend them. Balanced class weights over the pooled symbols scale each class's odds by its
    # weight (CRASH1000 is ~99 % UP, so a pool with it weights DOWN ~2.3 times UP, and a symmetric
    # symbol then clears the threshold short only); focal loss flattens confident predictions.
    # Calibration on the validation span (models.calibration) corrects what is left either way.
    focal_gamma: float = Field(default=0.0, ge=0, description="focal loss exponent; 0: cross-entropy")
    class_weights: bool = Field(default=False, description="weight the loss by balanced class weights of the training rows")
    grad_clip: float = Field(default=1.0, gt=0)
    max_train_windows: int | None = Field(default=None, description="windows sampled (once, seeded) from training")
    max_eval_windows: int | None = Field(default=None, description="windows sampled from validation for early stopping")
    # XGBoost
    n_estimators: int = Field(default=400, ge=1)
    max_depth: int = Field(default=4, ge=1)
    tree_learning_rate: float = Field(default=0.05, gt=0)
    early_stopping_rounds: int = Field(default=30, ge=1)
    # The family's own hyper-parameters: checked against its `params` model, kept with the defaults
    # filled in so that a logged config names every value the fit used.
    params: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="the model family's own hyper-parameters"
    )

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        family(kind)
        return kind

    @field_validator("params")
    @classmethod
    def _family_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "kind" not in info.data:  # an unknown kind, reported as such
            return params
        return family(info.data["kind"]).params.model_validate(params).model_dump()


_PROFILES: dict[str, dict] = {
    # Minutes for the whole zoo on two CPU cores: small nets on sampled windows.
    "demo": dict(
        hidden=32, layers=1, heads=2, epochs=6, batch_size=256, learning_rate=3e-3, patience=2,
        max_train_windows=12_000, max_eval_windows=6_000, n_estimators=300,
    ),
    # The roadmap's sizes.
    "full": dict(hidden=128, layers=3, heads=4, epochs=50, batch_size=256, learning_rate=1e-3, patience=5, n_estimators=1000),
}  # fmt: skip

PROFILES = tuple(_PROFILES)


def profile_config(profile: str, kind: str, seed: int = 0, **overrides) -> TrainConfig:
    if profile not in _PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {PROFILES}")
    return TrainConfig(kind=kind, seed=seed, **{**_PROFILES[profile], **overrides})
