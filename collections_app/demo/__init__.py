"""The demo collections `manage.py seed_demo` gives the demo user: browser sketches (p5, js,
p52vid) that make images with no external service. Each sketch lives in a file beside this one.

Pure: no Django, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Demo:
    key: str  # stable identity: kept in the seeder's history row, never shown as a title
    title: str
    description: str
    data: dict[str, Any]  # a GenerationInput v2 (step ids are renumbered when it is created)


def _source(name: str) -> str:
    return (HERE / name).read_text()


def _pick(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "type": "pick", "value_type": "strings", "value": {"values": values}}


def _weighted_pick(name: str, values: list[str], weights: list[int]) -> dict[str, Any]:
    return {"name": name, "type": "weighted_pick", "value_type": "strings",
            "value": {"values": values, "weights": weights}}


def _collection(steps: list[dict[str, Any]], variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": "v2", "steps": steps, "variables": variables,
            "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False}}


def demos() -> list[Demo]:
    """The demo collections, in the order they are listed."""
    return [
        Demo(
            key="palette-grid",
            title="Palette Grid",
            description="A 512 px grid of shapes (p5): the palette is a weighted pick, the "
                        "shape a pick, the layout comes from the hash.",
            data=_collection(
                [{"id": 1, "nodeName": "p5", "alias": "Grid",
                  "nodePayload": {"code": _source("palette_grid.js")}}],
                [_weighted_pick("palette", ["Sunset", "Citrus", "Nordic", "Candy", "Forest"],
                                [4, 3, 2, 2, 1]),
                 _pick("shape", ["circle", "square", "triangle"])],
            ),
        ),
        Demo(
            key="flow-field",
            title="Flow Field",
            description="Strands following a noise field (p5, 512 px); the mood is a pick.",
            data=_collection(
                [{"id": 1, "nodeName": "p5", "alias": "Field",
                  "nodePayload": {"code": _source("flow_field.js")}}],
                [_pick("mood", ["Paper", "Night", "Ember"])],
            ),
        ),
        Demo(
            key="truchet-page",
            title="Truchet Tiles",
            description="An HTML page drawing Truchet tiles on a canvas (js): the page is the "
                        "output, with its screenshot; the motif is a pick.",
            data=_collection(
                [{"id": 1, "nodeName": "js", "alias": "Page",
                  "nodePayload": {"body": _source("truchet.html"),
                                  "style": _source("truchet.css"),
                                  "script": _source("truchet_page.js"),
                                  "outputMimetype": "text/html"}}],
                [_pick("motif", ["arcs", "diagonals", "triangles"])],
            ),
        ),
        Demo(
            key="orbits",
            title="Orbits",
            description="A 2-second looping video of orbiting bodies (p52vid, 256 px); the "
                        "colours are a pick.",
            data=_collection(
                [{"id": 1, "nodeName": "p52vid", "alias": "Orbits",
                  "nodePayload": {"code": _source("orbits.js"), "duration": "2"}}],
                [_pick("glow", ["Aurora", "Sunrise"])],
            ),
        ),
    ]
