"""Defaults of the browser nodes, overridable through the environment (read at run time)."""

from __future__ import annotations

import os

TIMEOUT_ENV = "EMPROPS_BROWSER_TIMEOUT_S"
P52VID_TIMEOUT_ENV = "EMPROPS_P52VID_TIMEOUT_S"
P52VID_FPS_ENV = "EMPROPS_P52VID_FPS"
P5_FRAME_BUDGET_ENV = "EMPROPS_P5_FRAME_BUDGET"
WARM_PAGES_ENV = "EMPROPS_BROWSER_WARM_PAGES"

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_P52VID_TIMEOUT_S = 120.0
DEFAULT_P52VID_FPS = 30.0
DEFAULT_P52VID_DURATION_S = 3.0
MAX_P52VID_DURATION_S = 60.0
DEFAULT_P5_FRAME_BUDGET = 60


def _positive(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def timeout_s() -> float:
    """Wall-time limit of one js or p5 render."""
    return _positive(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def p52vid_timeout_s() -> float:
    """Wall-time limit of one p52vid render (all frames, not counting the encoder)."""
    return _positive(P52VID_TIMEOUT_ENV, DEFAULT_P52VID_TIMEOUT_S)


def p52vid_fps() -> float:
    return _positive(P52VID_FPS_ENV, DEFAULT_P52VID_FPS)


def p5_frame_budget() -> int:
    """Frames a p5 still runs when the sketch neither calls capture() nor stops with noLoop()."""
    return int(_positive(P5_FRAME_BUDGET_ENV, DEFAULT_P5_FRAME_BUDGET))


def warm_pages() -> int:
    """Pre-warmed single-use pages a browser keeps open per kind (p5, js); 0 opens every page
    when its render starts. More than one gains nothing: a render claims one page at a time."""
    raw = os.environ.get(WARM_PAGES_ENV, "").strip()
    try:
        return 0 if not raw else max(0, min(1, int(raw)))
    except ValueError:
        return 1
