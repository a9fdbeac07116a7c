"""Reads for collections; every read that is not public takes the viewer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    FlatFile,
    Project,
)
from emprops.api import get_or_not_found


def project_list(*, user: Any) -> QuerySet[Project]:
    return Project.objects.filter(user=user).order_by("-created_at")


def project_get(*, user: Any, project_id: UUID | str) -> Project:
    return get_or_not_found(project_list(user=user), label="Project", pk=project_id)


def collection_list(*, user: Any, project_id: UUID | str | None = None) -> QuerySet[Collection]:
    qs = Collection.objects.filter(project__user=user).select_related("project")
    if project_id is not None:
        qs = qs.filter(project_id=project_id)
    return qs.order_by("-created_at")


def collection_get(*, user: Any, collection_id: UUID | str, for_update: bool = False) -> Collection:
    qs = collection_list(user=user)
    if for_update:
        qs = qs.select_for_update(of=("self",))
    return get_or_not_found(qs, label="Collection", pk=collection_id)


def collection_public_list() -> QuerySet[Collection]:
    return (Collection.objects.filter(status=Collection.Status.PUBLISHED, archived=False)
            .select_related("project").order_by("-publish_date", "-created_at"))


def collection_public_get(*, collection_id: UUID | str) -> Collection:
    return get_or_not_found(collection_public_list(), label="Collection", pk=collection_id)


def collection_history_list(*, user: Any, collection_id: UUID | str) -> QuerySet[CollectionHistory]:
    collection = collection_get(user=user, collection_id=collection_id)
    return collection.history.order_by("created_at", "id")


def collection_files(*, user: Any, collection_id: UUID | str,
                     features: Mapping[str, str] | None = None) -> QuerySet[FlatFile]:
    """The outputs of one of the user's collections, newest first; `features` keeps those whose
    generation has every given trait (variable name -> picked value, exact)."""
    collection = collection_get(user=user, collection_id=collection_id)
    qs = FlatFile.objects.filter(user=user, component_links__component__collection=collection)
    if features:
        qs = qs.filter(features__contains=dict(features))
    return qs.distinct().order_by("-created_at", "-id")


def collection_preview_get(*, user: Any, collection_id: UUID | str) -> CollectionPreview | None:
    """The preview settings of one of the user's collections, None when never set; NotFound for
    others' collections."""
    collection = collection_get(user=user, collection_id=collection_id)
    return CollectionPreview.objects.filter(collection=collection).first()


def flat_file_get(*, user: Any, file_id: int) -> FlatFile:
    return get_or_not_found(FlatFile.objects.filter(user=user), label="File", pk=file_id)


def file_list(*, user: Any) -> QuerySet[FlatFile]:
    """The user's files, newest first."""
    return FlatFile.objects.filter(user=user).order_by("-created_at", "-id")


def collection_list_all() -> QuerySet[Collection]:
    """Every user's collections, newest first: a staff read, deliberately not owner-scoped."""
    return Collection.objects.select_related("project").order_by("-created_at")
