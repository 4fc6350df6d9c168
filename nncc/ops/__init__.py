"""Op definitions, one file per family; see ``registry`` for what an op is."""
from .registry import OpDef, all_ops, get_op, register

__all__ = ["OpDef", "all_ops", "get_op", "register"]
