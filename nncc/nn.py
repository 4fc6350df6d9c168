"""``nncc.nn`` as an importable module path: ``from nncc.nn import functional as F`` works as in PyTorch."""
from .frontend.nn import *  # noqa: F401,F403
from .frontend.nn import functional  # noqa: F401
