"""The staff tool's `GET /api/staff/<staff key>/collections` (the rest of that surface is in
workflows_app.api.views)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from collections_app.api.serializers import CollectionOutputSerializer
from collections_app.selectors import collection_list_all
from workflows_app.api.views import StaffKeyAPIView


class StaffCollectionListView(StaffKeyAPIView):
    serializer_class = CollectionOutputSerializer

    @extend_schema(responses=CollectionOutputSerializer(many=True),
                   summary="All collections (staff tool)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.paginated(collection_list_all(), CollectionOutputSerializer)
