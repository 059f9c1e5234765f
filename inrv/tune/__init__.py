"""The paper's trade-off point method as a tool: fit a grid of configurations of one volume, evaluate
Eq. 8, report the trade-off point (``inrv tune`` on the command line).

* :mod:`inrv.tune.tradeoff`: Eqs. 7-9 on 3D arrays of measurements (numpy only).
* :mod:`inrv.tune.grid`: grids, and fitting each cell with :func:`inrv.compress`, resumably.
* :mod:`inrv.tune.run`: :func:`tune`, the whole run; :mod:`inrv.tune.report` and :mod:`inrv.tune.plots`
  (matplotlib, optional) write the report.
"""

from __future__ import annotations

from typing import Any

__all__ = ["tune", "trade_off", "parse_grid"]


def __getattr__(name: str) -> Any:   # lazy: `import inrv.tune` stays cheap
    if name == "tune":
        from .run import tune

        return tune
    if name == "trade_off":
        from .tradeoff import trade_off

        return trade_off
    if name == "parse_grid":
        from .grid import parse_grid

        return parse_grid
    raise AttributeError(name)
