"""The js node: an HTML page with the generation's globals, screenshotted."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.browser.js_node import JsNode, build_page

from .conftest import png_of

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAYLOAD = {
    "body": "<html><head>%style%</head><body><div id='box'></div>%script%</body></html>",
    "style": "html, body { margin: 0; background: rgb(0, 0, 255); } #box { width: 100px; "
    "height: 100px; }",
    "script": "document.getElementById('box').style.background = variables.colour;",
}


def test_text_html_output_is_the_page_with_the_screenshot_as_alt(
    make_ctx: Callable[..., RunContext],
) -> None:
    ctx = make_ctx(variables={"colour": "rgb(255, 0, 0)"}, node_name="js")

    output = JsNode().run({**PAYLOAD, "outputMimetype": "text/html"}, ctx)

    assert output.mime_type == "text/html"
    assert (output.src_file, output.alt_file) == ("js.html", "js.png")
    files = {f.filename: f for f in output.files}
    assert files["js.html"].mime_type == "text/html"
    assert files["js.png"].mime_type == "image/png"
    html = files["js.html"].content.decode()
    assert "<style>html, body { margin: 0;" in html
    assert "style.background = variables.colour;</script>" in html
    assert '"colour": "rgb(255, 0, 0)"' in html  # the globals travel with the stored page
    image = png_of(files["js.png"].content).convert("RGB")
    assert image.size == (1024, 1024)
    assert image.getpixel((50, 50)) == (255, 0, 0)
    assert image.getpixel((500, 500)) == (0, 0, 255)


def test_default_output_is_the_screenshot(make_ctx: Callable[..., RunContext]) -> None:
    output = JsNode().run(PAYLOAD, make_ctx(variables={"colour": "#00ff00"}, node_name="js"))

    assert output.mime_type == "image/png"
    assert [f.filename for f in output.files] == ["js.png"]
    assert output.src_file == "js.png"
    assert output.alt_file is None
    assert png_of(output.files[0].content).convert("RGB").getpixel((50, 50)) == (0, 255, 0)


def test_a_deferred_capture_waits_for_capture(make_ctx: Callable[..., RunContext]) -> None:
    payload = {
        "body": "<body style='margin:0'>%script%</body>",
        "script": "deferCapture(); document.body.style.background = 'rgb(1, 1, 1)';"
        "setTimeout(() => { document.body.style.background = 'rgb(9, 8, 7)'; capture(); }, 300);",
    }

    output = JsNode().run(payload, make_ctx(node_name="js"))

    assert png_of(output.files[0].content).convert("RGB").getpixel((5, 5)) == (9, 8, 7)


def test_an_uncaught_exception_fails_the_js_node(make_ctx: Callable[..., RunContext]) -> None:
    with pytest.raises(NodeError) as failure:
        JsNode().run({"body": "%script%", "script": "undefinedFunction()"}, make_ctx())

    assert failure.value.message == "ReferenceError: undefinedFunction is not defined"
    assert failure.value.retryable is False


def test_build_page_fills_placeholders_inside_or_outside_their_elements() -> None:
    inside = build_page(
        body="<style>%style%</style><script>%script%</script>", style="a{}", script="x()"
    )
    bare = build_page(body="%style%<p>hi</p>", style="b{}", script="if (a </script/.test(s)) y()")

    assert inside == "<style>a{}</style><script>x()</script>"
    assert bare == "<style>b{}</style><p>hi</p>\n<script>if (a <\\/script/.test(s)) y()</script>\n"


def test_a_page_loading_p5_from_a_cdn_gets_the_projects_copy(
    make_ctx: Callable[..., RunContext],
) -> None:
    payload = {
        "body": "<html><head><style>body{margin:0}</style>"
        "<script src='https://cdn.jsdelivr.net/npm/p5@1.11.1/lib/p5.min.js'></script>"
        "</head><body>%script%</body></html>",
        "script": "function setup() { createCanvas(100, 100); background(3, 4, 5); noLoop(); }",
    }

    output = JsNode().run(payload, make_ctx(node_name="js"))

    image = png_of(output.files[0].content).convert("RGB")
    assert image.getpixel((50, 50)) == (3, 4, 5)
    assert image.getpixel((500, 500)) == (255, 255, 255)
