"""Admin polish: the product's name in the header, plural names that read as English."""

from __future__ import annotations

import re

import pytest
from django.apps import apps

OUR_APPS = {"accounts", "workflows_app", "collections_app", "jobs_app", "generation_app"}


@pytest.mark.django_db
def test_the_admin_index_names_the_product_and_pluralises_correctly(client, staff):
    client.force_login(staff)

    content = client.get("/admin/").content.decode()

    assert "<title>Collection Generation administration | EmProps admin</title>" in content
    assert '<a href="/admin/">EmProps Collection Generation</a>' in content
    for plural in ("Collection histories", "Collection remixes", "Job histories"):
        assert plural in content
    assert not re.search(r"historys|remixs", content, re.IGNORECASE)


def test_no_model_of_ours_has_a_naive_plural():
    # Django adds an "s": a consonant + "y" or a sibilant ending needs its own plural
    naive = re.compile(r"([^aeiou]ys|(x|ss|ch|sh)s)$")

    plurals = {m._meta.label: str(m._meta.verbose_name_plural) for m in apps.get_models()
               if m._meta.app_label in OUR_APPS}

    assert [label for label, plural in plurals.items() if naive.search(plural)] == []
    assert plurals["accounts.CreditsHistory"] == "credits histories"
    assert plurals["collections_app.CollectionRemix"] == "collection remixes"
    assert plurals["collections_app.CollectionHistory"] == "collection histories"
    assert plurals["jobs_app.JobHistory"] == "job histories"
