"""Search spaces: declarative parameter specs turned into Optuna suggestions, define-by-run, or
declared on KerasTuner ``HyperParameters``.

Owns one spec class per kind of parameter (``int``, ``float``, ``categorical``, ``fixed``), the
rules each must satisfy (checked when built), conditional parameters (``when:``) and the order in
which parameters are suggested so that a condition is always decided before the parameter it
guards. It knows nothing of files (``loading.py`` reads them) and imports neither Keras nor MLflow;
it only calls ``trial.suggest_*`` or ``hp.Int`` ... on the trial or hyperparameters it is given.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tuning.config.params import PARAMETERS, PER_LAYER_PREFIX
from tuning.errors import ConfigError, config_error_from_validation

if TYPE_CHECKING:
    import keras_tuner
    import optuna

__all__ = [
    "CategoricalSpec",
    "FixedSpec",
    "FloatSpec",
    "IntSpec",
    "ParamSpec",
    "SearchSpace",
]

Scalar = bool | int | float | str | None
Scope = tuple[str, tuple[Scalar, ...]]  # a KerasTuner conditional_scope: (parent, its values)


EXTRA_KEY = "extra"  # the user's own parameters: suggested and logged, not read by the model


def _is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool (YAML's true is not the number 1 here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Spec(BaseModel):
    """Fields every kind of parameter has."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = ""

    when: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="condition: {other_parameter: [values]}; the parameter exists only when every "
        "named parameter exists and takes one of the listed values",
    )
    description: str = Field(default="", description="free text shown by `tuning spaces`")

    @field_validator("when", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in value.items()}
        return value

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Ask ``trial`` for this parameter's value under ``name``."""
        raise NotImplementedError

    def declare(self, hp: keras_tuner.HyperParameters, name: str) -> Any:
        """Declare this parameter on ``hp`` under ``name``; return its current value there."""
        raise NotImplementedError

    def from_keras_tuner(self, values: Mapping[str, object], name: str) -> Any:
        """This parameter's value among KerasTuner's ``values``, as :meth:`suggest` returns it."""
        return values[name]

    def possible(self, value: object) -> bool:
        """Whether this parameter can ever take ``value`` (used to check ``when:`` lists)."""
        raise NotImplementedError

    def values(self) -> list[Any] | None:
        """Every value this parameter can take, when that is a short finite list."""
        return None

    def bounds(self) -> tuple[float, float] | None:
        """The smallest and largest value, for numeric parameters."""
        return None

    def summary(self) -> str:
        """One line describing the range, for `tuning spaces`."""
        raise NotImplementedError


class _RangeSpec(_Spec):
    """int and float: ``low``..``high`` inclusive, optionally on a log scale or a step grid."""

    log: bool = Field(default=False, description="sample on a log scale (needs low > 0)")

    @model_validator(mode="after")
    def _check_range(self) -> _RangeSpec:
        low, high, step = self.low, self.high, self.step  # type: ignore[attr-defined]
        if low > high:
            raise ValueError(
                f"low must not be above high (got low={low!r}, high={high!r}); swap them"
            )
        if self.log and low <= 0:
            raise ValueError(
                f"log: true needs low > 0 (got low={low!r}); raise low or set log: false"
            )
        if step is not None:
            if self.log:
                raise ValueError(
                    f"step and log: true cannot be used together (got step={step!r}); "
                    "drop one of them"
                )
            if step <= 0:
                raise ValueError(f"step must be positive (got step={step!r})")
            n = (high - low) / step
            if not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-9):
                raise ValueError(
                    f"step must divide high - low (got low={low!r}, high={high!r}, "
                    f"step={step!r}); change high to {low + math.floor(n) * step!r}"
                )
        return self

    def bounds(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))  # type: ignore[attr-defined]

    def possible(self, value: object) -> bool:
        if not _is_number(value):
            return False
        in_range = self.low <= value <= self.high  # type: ignore[attr-defined]
        return bool(in_range) and self._on_grid(value)

    def _on_grid(self, value: int | float) -> bool:
        """Whether ``value``, within the range, is one this kind can take."""
        return True

    @property
    def _sampling(self) -> str:
        """KerasTuner's name for the scale: ``log`` or ``linear``."""
        return "log" if self.log else "linear"

    def summary(self) -> str:
        extra = " log" if self.log else ""
        if self.step is not None:  # type: ignore[attr-defined]
            extra += f" step {self.step}"  # type: ignore[attr-defined]
        return f"{self.kind} {self.low} .. {self.high}{extra}"  # type: ignore[attr-defined]


class IntSpec(_RangeSpec):
    """An integer from ``low`` to ``high`` inclusive."""

    kind: ClassVar[str] = "int"
    type: Literal["int"] = "int"
    low: int = Field(description="smallest value (an integer)")
    high: int = Field(description="largest value (an integer, not below low)")
    step: int | None = Field(default=None, description="grid step (positive integer)")

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)

    def declare(self, hp: keras_tuner.HyperParameters, name: str) -> Any:
        step = self.step or (None if self.log else 1)
        return hp.Int(name, self.low, self.high, step=step, sampling=self._sampling)

    def _on_grid(self, value: int | float) -> bool:
        if value != int(value):
            return False
        return self.step is None or (int(value) - self.low) % self.step == 0

    def values(self) -> list[Any] | None:
        step = self.step or 1
        n = (self.high - self.low) // step + 1
        return list(range(self.low, self.high + 1, step)) if n <= 64 else None


class FloatSpec(_RangeSpec):
    """A real number from ``low`` to ``high`` inclusive."""

    kind: ClassVar[str] = "float"
    type: Literal["float"] = "float"
    low: float = Field(description="smallest value (a number)")
    high: float = Field(description="largest value (a number, not below low)")
    step: float | None = Field(default=None, description="grid step (positive number)")

    @field_validator("low", "high")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {value!r})")
        return value

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def declare(self, hp: keras_tuner.HyperParameters, name: str) -> Any:
        return hp.Float(name, self.low, self.high, step=self.step, sampling=self._sampling)


class CategoricalSpec(_Spec):
    """One of a list of values."""

    kind: ClassVar[str] = "categorical"
    type: Literal["categorical"] = "categorical"
    choices: list[Scalar] = Field(description="a non-empty list of distinct values")

    @field_validator("choices")
    @classmethod
    def _non_empty_distinct(cls, value: list[Scalar]) -> list[Scalar]:
        if not value:
            raise ValueError("choices must not be empty; list at least one value")
        seen: list[Scalar] = []
        for v in value:
            if any(type(v) is type(s) and v == s for s in seen):
                raise ValueError(f"choices must be distinct (got {v!r} twice)")
            seen.append(v)
        return value

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def declare(self, hp: keras_tuner.HyperParameters, name: str) -> Any:
        return hp.Choice(name, list(self.choices))

    def from_keras_tuner(self, values: Mapping[str, object], name: str) -> Any:
        value = values[name]
        if all(isinstance(c, bool) for c in self.choices):
            return bool(value)  # KerasTuner's Choice stores true/false as 1/0
        return value

    def possible(self, value: object) -> bool:
        return value in self.choices

    def values(self) -> list[Any]:
        return list(self.choices)

    def bounds(self) -> tuple[float, float] | None:
        nums = [c for c in self.choices if _is_number(c)]
        return (min(nums), max(nums)) if len(nums) == len(self.choices) else None

    def summary(self) -> str:
        return f"one of {self.choices}"


class FixedSpec(_Spec):
    """A constant: not searched, but recorded with every trial."""

    kind: ClassVar[str] = "fixed"
    type: Literal["fixed"] = "fixed"
    value: Scalar = Field(description="the constant value")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def declare(self, hp: keras_tuner.HyperParameters, name: str) -> Any:
        return hp.Fixed(name, self.value)

    def from_keras_tuner(self, values: Mapping[str, object], name: str) -> Any:
        return self.value

    def possible(self, value: object) -> bool:
        return bool(value == self.value)

    def values(self) -> list[Any]:
        return [self.value]

    def bounds(self) -> tuple[float, float] | None:
        v = self.value
        if _is_number(v):
            return (v, v)
        return None

    def summary(self) -> str:
        return f"fixed {self.value!r}"


ParamSpec = Annotated[
    IntSpec | FloatSpec | CategoricalSpec | FixedSpec, Field(discriminator="type")
]
SPEC_TYPES: dict[str, type[_Spec]] = {
    cls.kind: cls for cls in (IntSpec, FloatSpec, CategoricalSpec, FixedSpec)
}


def _field_descriptions(cls: type[_Spec], prefix: str) -> dict[str, str]:
    return {
        f"{prefix}.{name}": (field.description or name) for name, field in cls.model_fields.items()
    }


def build_spec(name: str, raw: object, *, source: str | None = None) -> _Spec:
    """Build one parameter spec from its YAML value.

    A mapping with ``type`` is a spec; any other value (a number, a string) is a fixed value.

    Raises:
        ConfigError: naming ``source`` and ``name`` when the spec breaks a rule.
    """
    if not isinstance(raw, Mapping):
        if isinstance(raw, list):
            raise ConfigError(
                f"a bare list is ambiguous (got {raw!r})",
                source=source,
                key=name,
                fix=f"write {{type: categorical, choices: {raw!r}}}",
            )
        raw = {"type": "fixed", "value": raw}
    kind = raw.get("type")
    if kind not in SPEC_TYPES:
        raise ConfigError(
            f"unknown parameter type {kind!r}",
            source=source,
            key=f"{name}.type",
            fix=f"use one of {', '.join(SPEC_TYPES)}",
        )
    cls = SPEC_TYPES[kind]
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as e:
        raise config_error_from_validation(
            e, source=source, prefix=name, fields=_field_descriptions(cls, name)
        ) from e


class SearchSpace:
    """An ordered set of named parameter specs, checked against what the model understands.

    Args:
        specs: Parameter name -> spec.
        source: The file the space was read from (for error messages).

    Raises:
        ConfigError: On an unknown parameter name, a value the model cannot take, a ``when:``
            naming a missing parameter or a value it can never take, or a cycle of conditions.
    """

    def __init__(self, specs: Mapping[str, _Spec], *, source: str | None = None) -> None:
        self.source = source
        self.specs: dict[str, _Spec] = dict(specs)
        for name, spec in self.specs.items():
            self._check_against_model(name, spec)
        self._check_conditions()
        self._check_per_layer()
        self.order: list[str] = self._topological_order()

    @classmethod
    def from_dict(cls, raw: object, *, source: str | None = None) -> SearchSpace:
        """Build a space from the mapping found in a search-space file."""
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(
                "a search space must be a non-empty mapping of parameter name to spec "
                f"(got {type(raw).__name__})",
                source=source,
                fix="write e.g. `learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, "
                "log: true}`",
            )
        specs = {}
        raw = dict(raw)
        extra = raw.pop(EXTRA_KEY, None) or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(
                f"{EXTRA_KEY} must be a mapping of your own parameter names to specs",
                source=source,
                key=EXTRA_KEY,
                fix="write e.g. `extra: {seed_offset: {type: int, low: 0, high: 3}}`",
            )
        items = [*raw.items(), *((f"{EXTRA_KEY}.{k}", v) for k, v in extra.items())]
        for name, value in items:
            if not isinstance(name, str):
                raise ConfigError(f"parameter names must be strings (got {name!r})", source=source)
            specs[name] = build_spec(name, value, source=source)
        return cls(specs, source=source)

    # -- validation -------------------------------------------------------------------------

    def _error(self, message: str, key: str, fix: str | None = None) -> ConfigError:
        return ConfigError(message, source=self.source, key=key, fix=fix)

    def _check_against_model(self, name: str, spec: _Spec) -> None:
        if name.startswith(f"{EXTRA_KEY}."):
            return  # the user's own parameter: suggested and logged, never read by the model
        info = PARAMETERS.get(name)
        if info is None:
            raise self._error(
                f"unknown parameter {name!r}",
                name,
                f"use one of {', '.join(PARAMETERS)}; your own go under `{EXTRA_KEY}:`",
            )
        values = spec.values()
        if info.kind == "bool":
            if values is None or not all(isinstance(v, bool) for v in values):
                raise self._error(
                    f"{name} takes true or false ({spec.summary()})",
                    name,
                    f"write {name}: true, or {{type: categorical, choices: [true, false]}}",
                )
            return
        if info.kind == "str":
            if values is None or not all(isinstance(v, str) for v in values):
                raise self._error(
                    f"{name} takes names, not numbers ({spec.summary()})",
                    name,
                    f"write {{type: categorical, choices: [...]}} with values from "
                    f"{', '.join(info.choices or ())}",
                )
            bad = [v for v in values if info.choices and v not in info.choices]
            if bad:
                raise self._error(
                    f"unknown {name} {bad[0]!r}",
                    f"{name}.{'value' if isinstance(spec, FixedSpec) else 'choices'}",
                    f"use one of {', '.join(info.choices or ())}",
                )
            return
        if values is not None and not all(_is_number(v) for v in values):
            raise self._error(
                f"{name} takes numbers ({spec.summary()})", name, f"give {info.description}"
            )
        if info.kind == "int" and isinstance(spec, FloatSpec):
            raise self._error(
                f"{name} is an integer parameter but its type is float",
                f"{name}.type",
                "use type: int",
            )
        if info.kind == "int" and values is not None and any(v != int(v) for v in values):
            raise self._error(f"{name} takes whole numbers (got {values!r})", name)
        lo_hi = spec.bounds()
        if lo_hi is None:
            return
        lo, hi = lo_hi
        if info.kind == "int":
            lo, hi = int(lo), int(hi)
        if info.minimum is not None and lo < info.minimum:
            raise self._error(
                f"{name} must be at least {info.minimum} (got {lo!r})",
                name,
                f"raise the lowest value to {info.minimum} or more",
            )
        if info.maximum is not None and hi > info.maximum:
            raise self._error(
                f"{name} must be at most {info.maximum} (got {hi!r})",
                name,
                f"lower the highest value to {info.maximum} or less",
            )

    def _check_conditions(self) -> None:
        for name, spec in self.specs.items():
            for parent, allowed in (spec.when or {}).items():
                key = f"{name}.when.{parent}"
                if parent == name:
                    raise self._error(f"{name} cannot depend on itself", key, "remove it")
                if parent not in self.specs:
                    raise self._error(
                        f"condition names {parent!r}, which is not in this space",
                        key,
                        f"add {parent} to the space or use one of {', '.join(self.specs)}",
                    )
                if not allowed:
                    raise self._error(
                        "condition lists no values, so it can never hold", key, "list values"
                    )
                for value in allowed:
                    if not self.specs[parent].possible(value):
                        raise self._error(
                            f"{parent} can never be {value!r} ({self.specs[parent].summary()})",
                            key,
                            f"list values {parent} can take",
                        )

    def _check_per_layer(self) -> None:
        spec = self.specs.get("n_neurons_per_layer")
        if spec is not None and spec.possible(True) and "n_neurons" not in self.specs:
            raise self._error(
                "n_neurons_per_layer needs n_neurons: its range is used for every layer",
                "n_neurons_per_layer",
                "add n_neurons: {type: int, low: ..., high: ...}",
            )

    def _parents(self, name: str) -> list[str]:
        """What ``name`` is decided after: its conditions, and for n_neurons the layer count."""
        parents = list(self.specs[name].when or {})
        if name == "n_neurons":
            parents += [p for p in ("n_neurons_per_layer", "n_hidden") if p in self.specs]
        return parents

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise self._error(
                    f"conditions form a cycle: {cycle}",
                    f"{name}.when",
                    "make one of these parameters unconditional",
                )
            state[name] = 1
            for parent in self._parents(name):
                visit(parent, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.specs:
            visit(name, [])
        return order

    # -- use ---------------------------------------------------------------------------------

    def active(self, name: str, chosen: Mapping[str, object]) -> bool:
        """Whether ``name`` exists given the values ``chosen`` so far."""
        return all(
            parent in chosen and chosen[parent] in allowed
            for parent, allowed in (self.specs[name].when or {}).items()
        )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample one set of parameters from ``trial``; inactive conditional ones are absent."""
        return self._choose(lambda name, key: self.specs[name].suggest(trial, key))

    def to_keras_tuner(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declare every parameter on a ``keras_tuner.HyperParameters`` and return the active ones.

        int -> ``hp.Int``, float -> ``hp.Float``, categorical -> ``hp.Choice``; a fixed value is
        returned as is (declared with ``hp.Fixed`` only when a condition names it, since a
        KerasTuner condition needs its parent declared). ``when: {parent: [values]}`` becomes
        ``hp.conditional_scope(parent, values)``, nested for several parents and for chained
        conditions. KerasTuner only opens a scope on a parent declared under the scopes already
        open, so a parent that was declared elsewhere (two independent parents) is declared again
        under them: same name, same range, one value. With ``n_neurons_per_layer``, the widths
        ``n_neurons_1..k`` (k = the largest n_hidden) are declared over n_neurons' range, each
        ``n_neurons_<i>`` inside ``conditional_scope("n_hidden", [values >= i])`` when n_hidden is
        searched.

        Args:
            hp: A ``keras_tuner.HyperParameters`` (e.g. ``trial.hyperparameters``).

        Returns:
            The parameters active for ``hp``'s current values, in the shape :meth:`suggest`
            returns (inactive conditional parameters absent).
        """
        _KerasTunerDeclaration(self, hp).declare_all()
        values = hp.values
        return self._choose(lambda name, key: self.specs[name].from_keras_tuner(values, key))

    def _choose(self, pick: Callable[[str, str], object]) -> dict[str, Any]:
        """The active parameters in suggestion order, each value ``pick(name, key)``.

        ``key`` is the name the value is recorded under: ``name`` itself, or with
        ``n_neurons_per_layer`` true, one ``n_neurons_<i>`` per hidden layer for n_neurons.
        """
        chosen: dict[str, Any] = {}
        for name in self.order:
            if not self.active(name, chosen):
                continue
            if name == "n_neurons" and chosen.get("n_neurons_per_layer"):
                # One width per layer, each over n_neurons' range: n_neurons_1, n_neurons_2, ...
                layers = int(chosen.get("n_hidden", PARAMETERS["n_hidden"].default))
                for i in range(1, layers + 1):
                    key = f"{PER_LAYER_PREFIX}{i}"
                    chosen[key] = pick(name, key)
                continue
            chosen[name] = pick(name, name)
        return chosen

    def searched(self) -> list[str]:
        """Names of the parameters that are sampled (not fixed)."""
        return [n for n in self.order if not isinstance(self.specs[n], FixedSpec)]

    def describe(self) -> Iterable[str]:
        """One line per parameter, in suggestion order."""
        for name in self.order:
            spec = self.specs[name]
            cond = ""
            if spec.when:
                cond = "  when " + ", ".join(f"{k} in {v}" for k, v in spec.when.items())
            yield f"{name:<20} {spec.summary()}{cond}"

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data (what the YAML file would hold), defaults left out."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            data = spec.model_dump(exclude_defaults=True) | {"type": spec.kind}
            if name.startswith(f"{EXTRA_KEY}."):
                out.setdefault(EXTRA_KEY, {})[name.removeprefix(f"{EXTRA_KEY}.")] = data
            else:
                out[name] = data
        return out


def _layer_counts(n_hidden: _Spec | None) -> list[int]:
    """Every number of hidden layers ``n_hidden`` allows (the default when the space has none)."""
    if n_hidden is None:
        return [int(PARAMETERS["n_hidden"].default)]
    if isinstance(n_hidden, IntSpec):
        return list(range(n_hidden.low, n_hidden.high + 1, n_hidden.step or 1))
    return [int(v) for v in (n_hidden.values() or [])]


class _KerasTunerDeclaration:
    """Declares a space's parameters on one ``keras_tuner.HyperParameters``, each under the
    conditional scopes of its ``when:`` chain (see :meth:`SearchSpace.to_keras_tuner`).

    Each name is declared once per set of open scopes; a parent is declared again (same name,
    same range) when a scope on it opens under scopes it was not declared in.
    """

    def __init__(self, space: SearchSpace, hp: keras_tuner.HyperParameters) -> None:
        self.space = space
        self.hp = hp
        self.declared: set[tuple[str, tuple[Scope, ...]]] = set()  # (key, scopes open)
        # Fixed values are declared (hp.Fixed) only where a scope needs them as its parent.
        self.parents = {p for spec in space.specs.values() for p in (spec.when or {})}
        self.parents.add("n_hidden")

    def declare_all(self) -> None:
        """Declare every parameter, in suggestion order."""
        per_layer = self.space.specs.get("n_neurons_per_layer")
        for name in self.space.order:
            if name == "n_neurons" and per_layer is not None:
                self._declare_widths(per_layer)
            else:
                self._under(self._chain(name), name, name)

    def _declare(self, name: str, key: str, opened: tuple[Scope, ...]) -> None:
        """Declare parameter ``name`` as ``key`` with the scopes ``opened`` open on ``hp``."""
        if (key, opened) in self.declared:
            return
        self.declared.add((key, opened))
        spec = self.space.specs[name]
        if isinstance(spec, FixedSpec) and name not in self.parents:
            return  # a constant no scope names: from_keras_tuner returns it, undeclared
        spec.declare(self.hp, key)

    def _chain(self, name: str) -> list[Scope]:
        """The scopes that guard ``name``: each parent's own chain, then the parent itself."""
        out: list[Scope] = []
        for parent, allowed in (self.space.specs[name].when or {}).items():
            for scope in [*self._chain(parent), (parent, tuple(allowed))]:
                if scope not in out:
                    out.append(scope)
        return out

    def _under(self, scopes: list[Scope], name: str, key: str) -> None:
        """Open ``scopes`` in order (declaring each parent there first), then declare ``name``."""
        with contextlib.ExitStack() as stack:
            opened: tuple[Scope, ...] = ()
            for parent, allowed in scopes:
                self._declare(parent, parent, opened)  # no-op when declared
                stack.enter_context(self.hp.conditional_scope(parent, list(allowed)))
                opened = (*opened, (parent, allowed))
            self._declare(name, key, opened)

    def _declare_widths(self, per_layer: _Spec) -> None:
        """n_neurons with n_neurons_per_layer: one width when it is false, ``n_neurons_<i>`` for
        every layer any n_hidden allows when it is true, both (each in its scope) when searched."""
        scopes = self._chain("n_neurons")
        fixed = isinstance(per_layer, FixedSpec)
        if isinstance(per_layer, FixedSpec):
            single, layered = not per_layer.value, bool(per_layer.value)
        else:  # searched: n_neurons when false, n_neurons_<i> when true
            single = layered = True
        if single:
            extra: list[Scope] = [] if fixed else [("n_neurons_per_layer", (False,))]
            self._under([*scopes, *extra], "n_neurons", "n_neurons")
        if layered:
            extra = [] if fixed else [("n_neurons_per_layer", (True,))]
            n_hidden = self.space.specs.get("n_hidden")
            layer_counts = _layer_counts(n_hidden)
            for i in range(1, max(layer_counts) + 1):
                guard: list[Scope] = []
                if n_hidden is not None and not isinstance(n_hidden, FixedSpec):
                    guard = [("n_hidden", tuple(v for v in layer_counts if v >= i))]
                self._under([*scopes, *extra, *guard], "n_neurons", f"{PER_LAYER_PREFIX}{i}")
