"""Seeding the demo collections (`collections_app.demo`) for one user, idempotently.

A demo collection is recognised by its seeder history row (action `demo_seeded:<key>`), whose
`data_after` is the data the seeder last wrote: a collection whose data still equals it is the
seeder's and follows the demo's current definition; one whose data differs was edited by its
owner and is left alone. A demo collection the owner deleted is made again on the next seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.db import transaction

from collections_app import generation_input as gi
from collections_app import services
from collections_app.demo import Demo, demos
from collections_app.models import Collection, CollectionHistory, CollectionPreview

SEED_ACTION_PREFIX = "demo_seeded:"

Outcome = Literal["created", "unchanged", "updated", "kept_edits"]


@dataclass(frozen=True)
class SeededCollection:
    key: str
    collection: Collection
    outcome: Outcome


def demo_collections_seed(*, user: Any) -> list[SeededCollection]:
    """Give `user` each demo collection, published and remixable: create the missing ones,
    bring unedited ones up to the current definition, keep edited ones as they are. Running it
    again changes nothing."""
    with transaction.atomic():
        # one seeder per user at a time, so two concurrent runs cannot both create a collection
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        return [_seed(user=user, demo=demo) for demo in demos()]


def _seed(*, user: Any, demo: Demo) -> SeededCollection:
    action = SEED_ACTION_PREFIX + demo.key
    seeded = (CollectionHistory.objects.filter(action=action, collection__project__user=user)
              .select_related("collection").order_by("-created_at", "-id").first())
    if seeded is None:
        collection = services.collection_create(
            user=user, data=demo.data, action=action,
            fields={"title": demo.title, "description": demo.description})
        services.collection_publish(user=user, collection_id=collection.id)
        services.collection_preview_update(
            user=user, collection_id=collection.id, enabled=True,
            access_level=CollectionPreview.AccessLevel.PUBLIC, is_remixable=True)
        collection.refresh_from_db()
        return SeededCollection(demo.key, collection, "created")
    collection = seeded.collection
    if collection.data != seeded.data_after:
        return SeededCollection(demo.key, collection, "kept_edits")
    if _as_created(demo, collection.data) == collection.data:
        return SeededCollection(demo.key, collection, "unchanged")
    collection = services.collection_update(
        user=user, project_id=collection.project_id, collection_id=collection.id, data=demo.data)
    CollectionHistory.objects.create(collection=collection, user=user, action=action,
                                     changed_fields=["data"], data_after=collection.data)
    # the preview snapshot (what others remix) follows the new definition too
    services.collection_preview_update(user=user, collection_id=collection.id)
    return SeededCollection(demo.key, collection, "updated")


def _as_created(demo: Demo, stored: dict[str, Any]) -> dict[str, Any] | None:
    """The demo's current definition as `collection_create` would have stored it with the step
    ids `stored` has, or None when the number of steps changed."""
    clean = services.generation_input_validate(demo.data)
    ids = [s["id"] for s in stored.get("steps") or [] if s.get("id") != gi.VARIABLES_STEP_ID]
    template_ids = [s["id"] for s in clean["steps"] if s.get("id") != gi.VARIABLES_STEP_ID]
    if len(ids) != len(template_ids):
        return None
    return gi.renumber(clean, iter(ids))
