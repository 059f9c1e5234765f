"""Former home of :mod:`inrv.codec.paper.downsample` (moved into the paper family's package): the same module."""

import sys

from .paper import downsample as _module

sys.modules[__name__] = _module
