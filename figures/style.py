"""One colour per method and one marker per budget metric, the same in every figure.

The suite's methods get fixed, well-separated colours (a reader who learns "graph-rl is red" in one figure
can rely on it in the next); a method added later gets a colour from a second palette chosen by a stable
hash of its name, so it never borrows a built-in method's colour and does not change between runs.
"""
from __future__ import annotations

import zlib

import matplotlib

#: the registered methods of this suite, each with its own colour (tab10, then tab20's darker shades)
_KNOWN = ("l1-uniform", "l1-global", "random", "graph-rl", "amc", "crl-neuron", "crl-layer", "random-search",
          "l1-random-search")
_BASE = ("#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22")
METHOD_COLOURS: dict[str, str] = dict(zip(_KNOWN, _BASE))
#: budget metric -> marker (circle for MACs, square for params, triangle for latency)
METRIC_MARKERS: dict[str, str] = {"macs": "o", "params": "s", "latency": "^"}


def method_colour(method: str) -> str | tuple[float, ...]:
    """The colour of ``method`` in every figure."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    extra = matplotlib.colormaps["tab20b"].colors  # none of these is in _BASE
    return extra[zlib.crc32(method.encode()) % len(extra)]


def metric_marker(metric: str) -> str:
    """The marker of a budget metric (``D`` for one this map does not know)."""
    return METRIC_MARKERS.get(str(metric), "D")
