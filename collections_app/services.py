"""Writes for projects and collections. Each public function is one transaction."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from collections_app import generation_input as gi
from collections_app import selectors
from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    CollectionPreviewVersion,
    CollectionRemix,
    Component,
    FlatFile,
    Project,
)
from emprops.api import get_or_not_found
from emprops.errors import GraphError, NotFound, ValidationFailed
from workflows_app.selectors import node_form_lookup

# collection fields a client may set (besides data)
EDITABLE_FIELDS = (
    "title", "description", "batch_max_tokens", "batch_mint_enabled", "blockchain",
    "cover_image_url", "editions", "encryption_enabled", "images", "is_current", "price",
)


def generation_input_validate(data: Any) -> dict[str, Any]:
    """The normalised GenerationInput, or GraphError (400) with details naming step and field;
    lists over the MAX_STEPS_PER_COLLECTION / MAX_VARIABLES / MAX_VARIABLE_VALUES caps are
    refused before any other work."""
    if data is None:
        return gi.empty_generation_input()
    if not isinstance(data, dict):
        raise GraphError("Invalid GenerationInput: `data` must be an object.",
                         details={"data": ["Must be an object."]})
    limits = gi.Limits(steps=settings.MAX_STEPS_PER_COLLECTION, variables=settings.MAX_VARIABLES,
                       values=settings.MAX_VARIABLE_VALUES)
    try:
        gi.check_limits(data, limits)
        names = [s.get("nodeName") for s in data.get("steps") or [] if isinstance(s, dict)]
        node_form = node_form_lookup(names=[n for n in names if isinstance(n, str)])
        return gi.validate(data, node_form=node_form)
    except gi.GenerationInputError as exc:
        raise GraphError(str(exc), details=exc.details) from None


def _assign_components(collection: Collection, data: dict[str, Any], *,
                       keep_existing: bool) -> dict[str, Any]:
    """Give steps component rows: new ones get new ids, with refs and mentions rewritten."""
    steps = [s for s in data.get("steps", []) if s.get("id") != gi.VARIABLES_STEP_ID]
    existing: set[int] = set()
    if keep_existing:
        existing = set(collection.components.values_list("id", flat=True))
    new_steps = [s for s in steps if s["id"] not in existing]
    created = Component.objects.bulk_create(
        [Component(collection=collection, node_name=s["nodeName"]) for s in new_steps]
    )
    new_ids = iter([c.id for c in created])
    ids_in_order = [s["id"] if s["id"] in existing else next(new_ids) for s in steps]
    if not new_steps:
        out = copy.deepcopy(data)
        for step in out.get("steps", []):
            step.pop("testValue", None)
        return out
    renumbered = gi.renumber(data, iter(ids_in_order))
    for step in renumbered.get("steps", []):
        if step["id"] in existing and step.get("fromId") == step["id"]:
            step.pop("fromId", None)
    if keep_existing:
        keep = {s["id"] for s in renumbered.get("steps", [])}
        collection.components.exclude(id__in=keep).delete()
    return renumbered


def _history(collection: Collection, *, user: Any, action: str, changed: Iterable[str] = (),
             before: Any = None, after: Any = None) -> None:
    CollectionHistory.objects.create(
        collection=collection, user=user, action=action, changed_fields=list(changed),
        data_before=before, data_after=after,
    )


def project_default(*, user: Any) -> Project:
    """The user's default project, created on demand."""
    project = Project.objects.filter(user=user, is_default=True).first()
    if project is not None:
        return project
    try:
        with transaction.atomic():
            return Project.objects.create(user=user, name="Default", is_default=True)
    except IntegrityError:  # made concurrently
        return Project.objects.get(user=user, is_default=True)


@transaction.atomic
def project_create(*, user: Any, name: str, is_default: bool = False) -> Project:
    if is_default:
        Project.objects.filter(user=user, is_default=True).update(is_default=False)
    return Project.objects.create(user=user, name=name, is_default=is_default)


@transaction.atomic
def project_update(*, user: Any, project_id: UUID, **fields: Any) -> Project:
    project = selectors.project_get(user=user, project_id=project_id)
    if fields.get("is_default"):
        Project.objects.filter(user=user, is_default=True).exclude(pk=project.pk).update(
            is_default=False)
    for key, value in fields.items():
        setattr(project, key, value)
    project.save()
    return project


@transaction.atomic
def project_delete(*, user: Any, project_id: UUID) -> None:
    selectors.project_get(user=user, project_id=project_id).delete()


@transaction.atomic
def collection_create(*, user: Any, project_id: UUID | None = None, asset_id: int | None = None,
                      data: Any = None, fields: dict[str, Any] | None = None,
                      action: str = "created", validated: bool = False) -> Collection:
    """A collection whose steps get fresh component ids (old ids kept as `fromId`); `validated`
    says `data` is already `generation_input_validate`'s output, so it is not checked again."""
    fields = dict(fields or {})
    if asset_id is not None:
        asset = selectors.flat_file_get(user=user, file_id=asset_id)
        if not isinstance(asset.gen_in_data, dict):
            raise ValidationFailed("This file holds no generation input to reuse.",
                                   details={"asset_id": ["No gen_in_data on this file."]})
        data = asset.gen_in_data if data is None else data
    if project_id is not None:
        project = selectors.project_get(user=user, project_id=project_id)
    else:
        project = project_default(user=user)
    clean = data if validated else generation_input_validate(data)
    collection = Collection.objects.create(project=project, data={}, **fields)
    collection.data = _assign_components(collection, clean, keep_existing=False)
    collection.save(update_fields=["data"])
    _history(collection, user=user, action=action,
             changed=["data", *fields.keys()], after=collection.data)
    return collection


@transaction.atomic
def collection_update(*, user: Any, project_id: UUID, collection_id: UUID,
                      data: Any = None, fields: dict[str, Any] | None = None) -> Collection:
    """Update fields and/or data; new steps get component rows, known steps keep their ids."""
    get_or_not_found(Project.objects.filter(user=user), label="Project", pk=project_id)
    collection = selectors.collection_get(user=user, collection_id=collection_id, for_update=True)
    if collection.project_id != project_id:
        raise NotFound("Collection not found.")
    fields = dict(fields or {})
    changed = [k for k, v in fields.items() if getattr(collection, k) != v]
    for key in changed:
        setattr(collection, key, fields[key])
    before = after = None
    if data is not None:
        clean = generation_input_validate(data)
        new_data = _assign_components(collection, clean, keep_existing=True)
        if new_data != collection.data:
            before, after = collection.data, new_data
            collection.data = new_data
            changed.append("data")
    if changed:
        collection.save()
        _history(collection, user=user, action="updated", changed=changed, before=before,
                 after=after)
    return collection


@transaction.atomic
def collection_delete(*, user: Any, project_id: UUID, collection_id: UUID) -> None:
    collection = selectors.collection_get(user=user, collection_id=collection_id, for_update=True)
    if collection.project_id != project_id:
        raise NotFound("Collection not found.")
    collection.delete()


@transaction.atomic
def collection_set_archived(*, user: Any, collection_id: UUID, archived: bool) -> Collection:
    collection = selectors.collection_get(user=user, collection_id=collection_id, for_update=True)
    if collection.archived != archived:
        collection.archived = archived
        collection.save(update_fields=["archived", "updated_at"])
        _history(collection, user=user, action="archived" if archived else "unarchived",
                 changed=["archived"])
    return collection


@transaction.atomic
def collection_publish(*, user: Any, collection_id: UUID) -> Collection:
    """Publish (idempotent): it shows in the public list from then on."""
    collection = selectors.collection_get(user=user, collection_id=collection_id, for_update=True)
    generation_input_validate(collection.data)
    if collection.status != Collection.Status.PUBLISHED:
        collection.status = Collection.Status.PUBLISHED
        collection.publish_date = timezone.now()
        collection.save(update_fields=["status", "publish_date", "updated_at"])
        _history(collection, user=user, action="published", changed=["status", "publish_date"])
    return collection


@transaction.atomic
def collection_preview_get_or_create(*, user: Any, collection_id: UUID) -> CollectionPreview:
    """The preview settings of one of the user's collections, created with their defaults on
    first use (NotFound for others' collections)."""
    preview = selectors.collection_preview_get(user=user, collection_id=collection_id)
    if preview is not None:
        return preview
    collection = selectors.collection_get(user=user, collection_id=collection_id)
    preview, _ = CollectionPreview.objects.get_or_create(collection=collection)
    return preview


@transaction.atomic
def collection_preview_update(*, user: Any, collection_id: UUID, **fields: Any) -> CollectionPreview:
    """Update the preview settings and snapshot the collection's current data as a new version."""
    collection = selectors.collection_get(user=user, collection_id=collection_id, for_update=True)
    preview, _ = CollectionPreview.objects.select_for_update().get_or_create(collection=collection)
    for key, value in fields.items():
        setattr(preview, key, value)
    preview.save()
    latest = preview.versions.order_by("-version").first()
    if latest is None or latest.data != collection.data:
        preview.versions.filter(is_latest=True).update(is_latest=False)
        CollectionPreviewVersion.objects.create(
            preview=preview, version=(latest.version + 1) if latest else 1, is_latest=True,
            data=collection.data,
        )
    _history(collection, user=user, action="preview_updated", changed=list(fields))
    return preview


@transaction.atomic
def collection_remix(*, user: Any, collection_id: UUID, project_id: UUID | None = None) -> Collection:
    """A copy of your own collection, or of a public remixable one, with fresh component ids."""
    source = Collection.objects.filter(pk=collection_id).select_related("project").first()
    allowed = source is not None and (
        source.project.user_id == user.pk
        or (source.status == Collection.Status.PUBLISHED and not source.archived
            and CollectionPreview.objects.filter(collection=source, is_remixable=True).exists())
    )
    if not allowed or source is None:
        raise NotFound("Collection not found.")
    preview = CollectionPreview.objects.filter(collection=source).first()
    latest = preview.versions.filter(is_latest=True).first() if preview else None
    # another user remixes what the owner released as the latest preview snapshot, not the
    # owner's live draft
    owner = source.project.user_id == user.pk
    data = latest.data if latest is not None and not owner else source.data
    target = collection_create(
        user=user, project_id=project_id, data=data,
        fields={"title": f"{source.title} (remix)".strip(), "description": source.description},
        action="remixed",
    )
    CollectionRemix.objects.create(source=source, target=target,
                                   version=latest.version if latest else None)
    return target


@dataclass(frozen=True)
class StepFiles:
    """One step's stored outputs, as `output_files_record` writes them."""

    component_id: int
    rel_id: str
    files: Mapping[str, tuple[str, str]]  # name -> (storage key, mime type)
    gen_in_data: Mapping[str, Any]
    gen_out_data: Mapping[str, Any]
    features: Mapping[str, str] = field(default_factory=dict)  # the generation's traits


def output_files_record(*, user_id: Any, job_id: Any, collection_id: Any,
                        steps: list[StepFiles]) -> None:
    """Record steps' stored outputs as `flat_file` rows, one per storage key (a retried run
    updates its rows), each linked to its step's component when that is a component of the
    job's own collection. Two statements, however many steps."""
    rows, components = [], []
    for step in steps:
        for name, (key, mime) in step.files.items():
            rows.append(FlatFile(user_id=user_id, name=name, storage_key=key, mime_type=mime,
                                 rel_type="component_test", rel_id=step.rel_id,
                                 gen_in_data=dict(step.gen_in_data),
                                 gen_out_data=dict(step.gen_out_data),
                                 features=dict(step.features), job_id=job_id))
            components.append(step.component_id)
    if not rows:
        return
    saved = FlatFile.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["storage_key"],
        update_fields=["user", "name", "mime_type", "rel_type", "rel_id", "gen_in_data",
                       "gen_out_data", "features", "job_id"])
    if collection_id is None:  # a one-off input: its step ids name no component
        return
    with connection.cursor() as cursor:
        # only components of the job's collection: a step id is the user's to choose
        cursor.execute(
            "INSERT INTO component_flat_file (component_id, flat_file_id) "
            "SELECT c.id, f.file_id FROM unnest(%s::bigint[], %s::bigint[]) AS f(component_id, "
            "file_id) JOIN component c ON c.id = f.component_id AND c.collection_id = %s "
            "ON CONFLICT ON CONSTRAINT uniq_component_flat_file DO NOTHING",
            [components, [row.pk for row in saved], collection_id])
