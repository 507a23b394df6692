"""Objectives from their configs: the class a ``_target_`` names, built with the config's knobs."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from objectives.base import AuxiliaryTerm, KnobError, Objective, TokenObjective, WithAuxiliaryTerms, objective_knobs


def objective_class(target: str) -> type[Objective]:
    """The class of a ``_target_`` such as ``objectives.nce.NCE``."""
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise KnobError(f"objective._target_={target!r} is not an importable objective class") from None
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise KnobError(f"objective._target_={target!r} is not a subclass of objectives.base.Objective")
    return cls


def knob_names(cls: type[Objective]) -> list[str]:
    """The constructor's named parameters: an objective without knobs inherits nn.Module's (*args, **kwargs)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def knob_defaults(cls: type[Objective]) -> dict[str, Any]:
    """The constructor's knobs and their defaults (its yaml's values: a test holds them equal)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: parameters[name].default for name in knob_names(cls)}


def with_knob_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """An objective config (``_target_`` + knobs) as written by an earlier version, with the knobs added since at
    their defaults: a knob is added with the default that keeps the objective as it was, so a run made before
    it is the same run. Unchanged when the class cannot be imported."""
    try:
        cls = objective_class(config["_target_"])
    except (KnobError, KeyError, TypeError):
        return dict(config)
    return {**knob_defaults(cls), **config}


def offers_term(cls: type[Objective]) -> bool:
    """Whether the objective offers its penalty as an auxiliary term (``TokenObjective.term``)."""
    return issubclass(cls, TokenObjective) and cls.term is not None


def build_objective(config: Mapping[str, Any], terms: Sequence[AuxiliaryTerm] = ()) -> Objective:
    """The objective of a config (``_target_`` + knobs; ``search_space`` is the tuner's), with ``terms`` added
    when given. A knob's value is checked by the objective itself; an unknown knob name here."""
    cls = objective_class(config["_target_"])
    knobs = objective_knobs(config)
    allowed = knob_names(cls)
    for key in knobs:
        if key not in allowed:
            raise KnobError(f"objective.{key} is not a knob of {cls.name}; its knobs: {', '.join(allowed) or 'none'}")
    objective = cls(**knobs)
    return WithAuxiliaryTerms(objective, terms) if terms else objective


def reads_true_source(config: Mapping[str, Any]) -> bool:
    """Whether the objective of a run's config (as an earlier version wrote it, too) reads the synthetic source's
    exact truth in training (``Objective.reads_true_source``); False for a config no class builds any more."""
    try:
        return build_objective(with_knob_defaults(config)).reads_true_source()
    except (KnobError, KeyError, TypeError):
        return False


def auxiliary_term(name: str, config: Mapping[str, Any], weight: float) -> AuxiliaryTerm:
    """The term ``name`` that the objective of ``config`` (built with its knobs) offers, at ``weight``."""
    objective = build_objective(config)
    if not isinstance(objective, TokenObjective) or objective.term is None:
        raise KnobError(f"aux.{name}: objective {name} offers no auxiliary term")
    return AuxiliaryTerm(name, weight, objective.term)
