"""The staff tool's `GET /api/staff/<staff key>/collections` (the rest of that surface is in
workflows_app.api.views)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from collections_app.api.serializers import CollectionOutputSerializer
from collections_app.models import Collection
from workflows_app.api.views import StaffKeyAPIView


def collection_list_all() -> QuerySet[Collection]:
    """Every user's collections, newest first: a staff read, deliberately not owner-scoped.

    It belongs in collections_app/selectors.py; it lives here until that file's owner moves it.
    """
    return Collection.objects.select_related("project").order_by("-created_at")


class StaffCollectionListView(StaffKeyAPIView):
    serializer_class = CollectionOutputSerializer

    @extend_schema(responses=CollectionOutputSerializer(many=True),
                   summary="All collections (staff tool)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.paginated(collection_list_all(), CollectionOutputSerializer)
