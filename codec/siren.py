"""Former home of :mod:`inrv.codec.paper.siren` (moved into the paper family's package): the same module."""

import sys

from .paper import siren as _module

sys.modules[__name__] = _module
