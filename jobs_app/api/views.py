from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core import signing
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.views import ViewerListView
from jobs_app import selectors
from jobs_app.api import serializers as s
from jobs_app.events import EVENTS_TOKEN_MAX_AGE, EVENTS_TOKEN_SALT


class JobListView(ViewerListView):
    serializer_class = s.JobOutputSerializer
    filterset_fields = ["status", "job_type"]
    search_fields = ["name"]
    ordering_fields = ["created_at", "updated_at", "status"]

    def list_for_viewer(self) -> Any:
        return selectors.job_list(user=self.request.user)


# `GET /api/jobs/{id}` is generation_app's (generation_app.api.views.JobDetailView): the detail
# tells why a job waits, which needs the engine's rows.


class JobHistoryView(ViewerListView):
    serializer_class = s.JobHistoryOutputSerializer
    filter_backends: list[Any] = []
    pagination_class = None

    def list_for_viewer(self) -> Any:
        return selectors.job_history_list(user=self.request.user, job_id=self.kwargs["job_id"])


class JobEventsTokenView(APIView):
    @extend_schema(request=None, responses=s.EventsTokenOutputSerializer,
                   summary="A short-lived token for the event stream (EventSource sets no headers)")
    def post(self, request: Request, job_id: UUID) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        token = signing.dumps({"u": str(request.user.pk), "j": str(job.id)}, salt=EVENTS_TOKEN_SALT)
        return Response({"token": token, "expires_in": EVENTS_TOKEN_MAX_AGE,
                         "url": f"/api/jobs/{job.id}/events?token={token}"})
