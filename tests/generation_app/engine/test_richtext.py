"""Rich-text prompts: serialising, mentions, rendering and re-writing ids."""

import json

from generation_app.engine.richtext import mentions, render, rewrite_mentions, to_text


def doc(*blocks):
    return json.dumps([{"type": "paragraph", "children": list(children)} for children in blocks])


def text(value):
    return {"text": value}


def var(name):
    return {"type": "variable", "variable": {"name": name}, "children": [{"text": ""}]}


def comp(step_id):
    return {"type": "component", "component": {"id": step_id}, "children": [{"text": ""}]}


# --- to_text


def test_to_text_serialises_variables_components_and_joins_blocks():
    value = doc([text("a "), var("color"), text(" cat")], [text("like "), comp(1000001)])

    assert to_text(value) == "a $color cat\nlike #1000001"


def test_to_text_of_nested_children():
    value = json.dumps(
        [{"type": "paragraph", "children": [{"type": "link", "children": [text("in"), var("x")]}]}]
    )

    assert to_text(value) == "in$x"


def test_to_text_of_plain_string_is_unchanged():
    assert to_text("a $color cat #12") == "a $color cat #12"
    assert to_text("") == ""


def test_to_text_of_json_that_is_not_a_document_is_unchanged():
    for value in ['{"text": "x"}', "[1, 2]", '"quoted"', "42", '[{"type": "paragraph"}]', "[oops"]:
        assert to_text(value) == value


def test_to_text_of_empty_document():
    assert to_text("[]") == ""
    assert to_text(doc([])) == ""


def test_to_text_skips_malformed_nodes():
    value = json.dumps(
        [
            {
                "type": "paragraph",
                "children": [
                    text("a"),
                    {"type": "variable"},
                    {"type": "component", "component": {}},
                    5,
                    text("b"),
                ],
            }
        ]
    )

    assert to_text(value) == "ab"


# --- mentions


def test_mentions_from_component_nodes_and_text():
    value = doc([comp(1000001), text(" and #1000002 but not &#123; or a#5 or #12px")])

    assert mentions(value) == {1000001, 1000002}


def test_mentions_from_string_component_ids():
    assert mentions(doc([comp("1000003")])) == {1000003}


def test_mentions_in_plain_text():
    assert mentions("see #1000001, #953 and #7.") == {1000001, 953, 7}
    assert mentions("no mentions # here #x") == set()


# --- render


def test_render_document_substitutes_variables_and_components():
    value = doc([text("a "), var("color"), text(" cat")], [comp(1000001)])

    rendered = render(value, variables={"color": "red"}, components={1000001: "by night"})

    assert rendered == "a red cat\nby night"


def test_render_text_dollar_names_longest_first():
    rendered = render(
        "$color and $color2 and $colors_x",
        variables={"color": "red", "color2": "blue"},
        components={},
    )

    assert rendered == "red and blue and $colors_x"


def test_render_unknown_names_and_ids_stay():
    rendered = render(doc([var("nope"), text(" #42 $x"), comp(99)]), variables={}, components={})

    assert rendered == "$nope #42 $x#99"


def test_render_mentions_in_text_nodes_and_plain_text():
    assert render("see #5!", variables={}, components={5: "FIVE"}) == "see FIVE!"
    assert render(doc([text("see #5")]), variables={}, components={5: "FIVE"}) == "see FIVE"


def test_render_does_not_rescan_inserted_values():
    rendered = render("$a $b", variables={"a": "$b", "b": "#1"}, components={1: "one"})

    assert rendered == "$b #1"


def test_render_variable_name_needs_word_boundary():
    assert render("$cat$cat_x $cat.", variables={"cat": "C"}, components={}) == "C$cat_x C."


def test_render_special_regex_characters_in_names():
    assert render("$a.b $a+", variables={"a.b": "X", "a+": "Y"}, components={}) == "X Y"


# --- rewrite_mentions


def test_rewrite_mentions_in_document_keeps_json_form():
    value = doc([comp(1), text(" then #2 and #3")], [comp("2")])

    rewritten = rewrite_mentions(value, {1: 1000001, 2: 1000002})

    assert json.loads(rewritten) == [
        {"type": "paragraph", "children": [comp(1000001), text(" then #1000002 and #3")]},
        {"type": "paragraph", "children": [comp("1000002")]},
    ]
    assert isinstance(rewritten, str)
    assert ", " not in rewritten  # compact, like JSON.stringify


def test_rewrite_mentions_in_plain_text_stays_plain():
    assert rewrite_mentions("#1 and #2 and #12", {1: 10, 2: 20}) == "#10 and #20 and #12"


def test_rewrite_mentions_keeps_non_ascii_text():
    value = doc([text("café #1")])

    assert json.loads(rewrite_mentions(value, {1: 2})) == [
        {"type": "paragraph", "children": [text("café #2")]}
    ]
    assert "café" in rewrite_mentions(value, {1: 2})


def test_rewrite_mentions_without_matches_returns_equivalent_value():
    value = doc([text("nothing")])

    assert json.loads(rewrite_mentions(value, {1: 2})) == json.loads(value)
    assert rewrite_mentions("plain", {1: 2}) == "plain"
