"""Base views shared by the apps' APIs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import generics


class ViewerListView(generics.ListAPIView):
    """A list of the viewer's rows: subclasses implement `list_for_viewer()`."""

    def list_for_viewer(self) -> QuerySet[Any]:
        raise NotImplementedError(".list_for_viewer() must be overridden")

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no viewer
            return self.get_serializer_class().Meta.model.objects.none()  # type: ignore[attr-defined,no-any-return]
        return self.list_for_viewer()
