"""Exceptions raised by nncc. Every message names the offending node, layer, file or shape."""


class NNCCError(Exception):
    """Base class of every error nncc raises on bad input."""


class ShapeError(NNCCError, ValueError):
    """A tensor shape or dtype does not fit an op, a layer or a compiled module's signature."""


class IRError(NNCCError):
    """The IR is malformed: a verifier failure or a parse error."""


class UnsupportedError(NNCCError, NotImplementedError):
    """Something nncc does not support yet (an op, an attribute value, a dtype)."""
