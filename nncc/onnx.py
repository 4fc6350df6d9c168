"""``nncc.onnx``: ONNX models in and out.

Example::

    model = nncc.onnx.load("lenet.onnx")      # an nncc Module; its float initializers are parameters
    fwd = nncc.compile(model)                  # input shapes and dtypes come from the file
    nncc.onnx.save(fwd, "out.onnx")            # the forward graph, with the compiled module's current weights
"""
from .frontend.onnx_export import export, save
from .frontend.onnx_import import OnnxError, OnnxModel, load

__all__ = ["load", "save", "export", "OnnxModel", "OnnxError"]
