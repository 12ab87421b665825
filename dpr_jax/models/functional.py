"""The dual encoder in functional form: a static graph plus a pure dict of float32 parameters.

Flax NNX modules are Python objects; ``jax.jit``, ``jax.grad`` and orbax want pytrees. The bridge is
``nnx.split(model, nnx.Param, ...)`` -> (graph definition, parameters, rest of the state) once, and
``nnx.merge`` inside the jitted function. Training (gradients of ``params``), offline encoding
(``params`` replicated over the devices) and loading a run directory (``params`` restored from a
checkpoint into an abstract model) all go through :class:`FunctionalModel`, so there is one place
that knows how a dual encoder becomes arrays and back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from dpr_jax.errors import DprJaxError

SIDES = ("question", "passage")


@dataclasses.dataclass(frozen=True)
class FunctionalModel:
    """A dual encoder split into its static graph, its float32 parameters and the rest of its state."""

    graphdef: Any
    rest: Any

    @classmethod
    def split(cls, model: nnx.Module) -> tuple["FunctionalModel", dict]:
        """``(functional model, params as a pure nested dict)``; works on abstract models too."""
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return cls(graphdef, rest), nnx.to_pure_dict(params)

    def has_extra_state(self) -> bool:
        """Whether the model holds state besides its parameters (checkpoints hold parameters only)."""
        return bool(jax.tree.leaves(self.rest))

    def module(self, params: dict) -> nnx.Module:
        """The dual encoder with ``params`` (a pure dict, as from :meth:`split` or a checkpoint)."""
        return nnx.merge(self.graphdef, params, self.rest)

    def encode(self, params: dict, side: str, batch: dict, key: jax.Array | None = None) -> jax.Array:
        """Vectors of ``batch`` by the ``side`` tower (``"question"``/``"passage"``); dropout iff ``key``."""
        if side not in SIDES:
            raise DprJaxError(f"side must be one of {SIDES}, not {side!r}")
        model = self.module(params)
        rngs = None if key is None else nnx.Rngs(dropout=key)
        return model.tower(side)(batch, rngs=rngs)
