"""A generation's traits: its picked variables as `features`, display names as `feature_labels`."""

from generation_app.engine.variables import generation_traits, pick_variables

GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"


def var(name, values, *, display_names=None, **extra):
    value = {"values": values}
    if display_names is not None:
        value["display_names"] = display_names
    return {"name": name, "type": "pick", "value_type": "strings", "value": value, **extra}


def test_without_feature_marks_every_picked_variable_is_a_trait():
    variables = [var("who", ["John", "Mary", "Peter"]), var("job", ["Engineer", "Other"])]
    picked = pick_variables(variables, GOLDEN)

    features, labels = generation_traits(picked, variables)

    assert features == {"who": "Mary", "job": "Engineer"}
    assert labels == {}


def test_marked_variables_are_the_only_traits_when_any_is_marked():
    variables = [var("who", ["John", "Mary"], is_feature=False),
                 var("job", ["Engineer", "Other"], is_feature=True),
                 var("mood", ["calm", "wild"])]

    features, _ = generation_traits({"who": "Mary", "job": "Other", "mood": "wild"}, variables)

    assert features == {"job": "Other"}


def test_all_marks_false_as_the_existing_studio_writes_them_keeps_every_trait():
    variables = [var("who", ["John", "Mary"], is_feature=False, feature_name="",
                     use_display_name=False)]

    features, _ = generation_traits({"who": "John"}, variables)

    assert features == {"who": "John"}


def test_display_names_of_the_picked_values_where_given():
    variables = [var("color", ["#f00", "#00f"], display_names=["Red", "Blue"]),
                 var("shape", ["sq", "ci"], display_names=["Square", ""]),
                 var("size", ["s", "l"], display_names=["Small"])]

    features, labels = generation_traits({"color": "#00f", "shape": "ci", "size": "l"}, variables)

    assert features == {"color": "#00f", "shape": "ci", "size": "l"}
    assert labels == {"color": "Blue"}


def test_an_overridden_value_outside_the_list_has_no_label():
    variables = [var("color", ["#f00"], display_names=["Red"])]

    features, labels = generation_traits({"color": "#0f0"}, variables)

    assert (features, labels) == ({"color": "#0f0"}, {})


def test_numbers_in_the_list_match_their_picked_text_and_malformed_entries_are_skipped():
    variables = [var("n", [1, 2], display_names=["one", "two"]), "junk", {"name": 3},
                 {"name": "bare"}]

    features, labels = generation_traits({"n": "2", "unlisted": "x"}, variables)

    assert features == {"n": "2"}
    assert labels == {"n": "two"}
