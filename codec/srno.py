"""Former home of :mod:`inrv.codec.paper.srno` (moved into the paper family's package): the same module."""

import sys

from .paper import srno as _module

sys.modules[__name__] = _module
