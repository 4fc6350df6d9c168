"""Code generation: per target, a graph and its kernel plan become a generated Python module.

``targets.get_target(name)`` gives the emitter and the array transfers of a target ("cpu", "cuda").
"""
from .emitted import Emitted
from .targets import get_target

__all__ = ["Emitted", "get_target"]
