"""Domain specs as Dagster config, and an executor that refuses a bad config before any step runs.

`spec_config` turns a domain pydantic model (LabelSpec, ExecutionConfig, GateCriteria …) into a
`dg.Config` with the same fields, defaults, descriptions *and* constraints, nested models as nested
configs; the domain's own validators run when the config is built. Dagster builds an asset's config
object only when its step starts, so `checked_in_process_executor` builds the config of every asset a
run is to execute before the first step: a value out of range is refused with the asset and field named
(`config of training_dataset refused: labels.horizon: …`) and no step runs.
"""

from __future__ import annotations

from copy import copy
from typing import Any, ClassVar

import dagster as dg
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator


class SpecConfig(dg.Config):
    """A config mirroring `spec`; `to_spec()` is the domain object, validated by the domain's own rules."""

    spec: ClassVar[type[BaseModel] | None] = None  # None: a partial mirror, completed by its asset

    @model_validator(mode="after")
    def _domain_rules(self) -> SpecConfig:
        # Cross-field rules (split fractions summing to 1 …) live in the spec's validators.
        if self.spec is not None:
            self.to_spec()
        return self

    def to_spec(self) -> Any:
        fields = set(self.spec.model_fields)
        return self.spec.model_validate(self.model_dump(include=fields))


def spec_config(spec: type[BaseModel], name: str, exclude: set[str] = frozenset(), base: type[SpecConfig] = SpecConfig):
    """A `SpecConfig` subclass named `name` with the fields of `spec` (less `exclude`), constraints kept."""
    fields: dict[str, Any] = {}
    for field_name, info in spec.model_fields.items():
        if field_name in exclude:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = spec_config(annotation, f"{name}{annotation.__name__}")
            fields[field_name] = (nested, Field(default=nested(**info.default.model_dump()), description=info.description))
        else:
            fields[field_name] = (annotation, copy(info))
    model = create_model(name, __base__=base, __module__=base.__module__, **fields)
    model.spec = None if exclude else spec
    return model


class ConfigRefused(dg.DagsterError):
    """A run's config for an asset breaks a constraint; the message names the asset and the field."""


def _refusal(asset: str, exc: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e['input']!r})" for e in exc.errors()]
    return f"config of {asset} refused: " + "; ".join(problems)


class _CheckedExecutor(dg.Executor):
    """Dagster's in-process executor, after building the config of every asset the run is to execute."""

    def __init__(self, inner: dg.Executor, configs: dict[str, type[dg.Config]]):
        self.inner, self.configs = inner, configs

    @property
    def retries(self):
        return self.inner.retries

    @property
    def step_dependency_config(self):
        return self.inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        ops = plan_context.run_config.get("ops", {})
        for key in execution_plan.step_keys_to_execute:
            if key in self.configs:
                try:
                    self.configs[key](**(ops.get(key) or {}).get("config", {}))
                except ValidationError as exc:
                    raise ConfigRefused(_refusal(key, exc)) from exc
        yield from self.inner.execute(plan_context, execution_plan)


def checked_in_process_executor(configs: dict[str, type[dg.Config]]) -> dg.ExecutorDefinition:
    """The in-process executor (same config), refusing a run whose configs break their constraints
    before any of its steps starts. `execute_in_process` brings its own executor: there, as Dagster
    does by itself, a bad config fails its asset's step before the asset's code runs."""

    @dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
    def checked(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _CheckedExecutor(dg.in_process_executor.executor_creation_fn(init_context), configs)

    return checked
