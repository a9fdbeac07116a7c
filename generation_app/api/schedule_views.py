from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app import selectors as collection_selectors
from emprops.api import error_responses
from emprops.views import ViewerListView
from generation_app.api import extra_serializers as s
from generation_app.models import CollectionSchedule
from generation_app.services import schedules


class CollectionScheduleListCreateView(ViewerListView):
    serializer_class = s.ScheduleOutputSerializer
    filterset_fields = ["status"]
    ordering_fields = ["created_at", "next_run_at"]

    def list_for_viewer(self) -> Any:
        collection = collection_selectors.collection_get(
            user=self.request.user, collection_id=self.kwargs["collection_id"])
        return schedules.schedule_list(user=self.request.user, collection_id=collection.pk)

    @extend_schema(request=s.ScheduleInputSerializer, responses={201: s.ScheduleOutputSerializer},
                   summary="Schedule generations of a collection (cron or interval)")
    def post(self, request: Request, collection_id: UUID) -> Response:
        body = s.ScheduleInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = dict(body.validated_data)
        schedule = schedules.schedule_create(
            user=request.user, collection_id=collection_id, cron=v.get("cron"),
            interval_seconds=v.get("interval_seconds"), timezone_name=v["timezone"],
            end_at=v.get("end_at"), count=v["count"], variables=v["variables"])
        return Response(s.ScheduleOutputSerializer(schedule).data, status=status.HTTP_201_CREATED)


class ScheduleFilter(django_filters.FilterSet):
    collection_id = django_filters.UUIDFilter(field_name="collection_id")

    class Meta:
        model = CollectionSchedule
        fields = ["status"]


class ScheduleListView(ViewerListView):
    serializer_class = s.ScheduleOutputSerializer
    filterset_class = ScheduleFilter
    ordering_fields = ["created_at", "next_run_at"]

    def list_for_viewer(self) -> Any:
        return schedules.schedule_list(user=self.request.user)


class ScheduleDetailView(APIView):
    @extend_schema(responses=s.ScheduleOutputSerializer, summary="One of your schedules")
    def get(self, request: Request, schedule_id: UUID) -> Response:
        return Response(s.ScheduleOutputSerializer(
            schedules.schedule_get(user=request.user, schedule_id=schedule_id)).data)

    @extend_schema(request=None, responses={204: None}, summary="Delete a schedule")
    def delete(self, request: Request, schedule_id: UUID) -> Response:
        schedules.schedule_delete(user=request.user, schedule_id=schedule_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePauseView(APIView):
    @extend_schema(request=None,
                   responses={200: s.ScheduleOutputSerializer, **error_responses(409)},
                   summary="Pause a schedule")
    def post(self, request: Request, schedule_id: UUID) -> Response:
        return Response(s.ScheduleOutputSerializer(
            schedules.schedule_pause(user=request.user, schedule_id=schedule_id)).data)


class ScheduleResumeView(APIView):
    @extend_schema(request=None,
                   responses={200: s.ScheduleOutputSerializer, **error_responses(409)},
                   summary="Resume a schedule from its next slot")
    def post(self, request: Request, schedule_id: UUID) -> Response:
        return Response(s.ScheduleOutputSerializer(
            schedules.schedule_resume(user=request.user, schedule_id=schedule_id)).data)


class ScheduleRunListView(ViewerListView):
    serializer_class = s.ScheduleRunOutputSerializer
    filterset_fields = ["status"]
    ordering_fields = ["scheduled_for"]

    def list_for_viewer(self) -> Any:
        return schedules.schedule_run_list(user=self.request.user,
                                           schedule_id=self.kwargs["schedule_id"])
