"""inrv.codec: the neural models that turn a voxel array into compact bytes and back.

Importing this package does not import torch; the model modules do, when they are used.
The codec never opens a file: it takes a numpy array and returns an :class:`Encoded`
(plain data: a model id, a msgpack-able config and named byte sections), and the reverse.
"""

from .base import Encoded, get_model, list_models
from .config import PRESETS, LatentConfig, PaperConfig, make_config

__all__ = ["Encoded", "get_model", "list_models", "PRESETS", "PaperConfig", "LatentConfig", "make_config"]
