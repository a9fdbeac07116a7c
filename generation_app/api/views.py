from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.api import error_responses
from emprops.idempotency import idempotent
from generation_app import selectors
from generation_app.api import serializers as s
from generation_app.gallery.links import gallery_path
from generation_app.services import control, replay
from generation_app.services.requests import generation_request
from jobs_app.api.serializers import JobOutputSerializer


class CollectionGenerateView(APIView):
    @extend_schema(request=s.GenerationRequestInputSerializer,
                   responses={202: s.GenerationRequestOutputSerializer,
                              **error_responses(402, 409, 422)},
                   summary="Start generations of a collection: one job holding all of them")
    @idempotent
    def post(self, request: Request, collection_id: UUID) -> Response:
        body = s.GenerationRequestInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        job = generation_request(user=request.user, collection_id=collection_id,
                                 variables=v.get("variables"),
                                 workflow_priority=v.get("workflow_priority"),
                                 count=v.get("count"), hashes=v.get("hashes"),
                                 no_cache=v["no_cache"])
        return Response({"jobId": str(job.id)}, status=status.HTTP_202_ACCEPTED)


class JobDetailView(APIView):
    """Lives here rather than in jobs_app (which uses no other app), like cancel and retry: what
    a job waits for is read from the engine's rows."""

    @extend_schema(responses=s.JobDetailOutputSerializer,
                   summary="One of your jobs, and what it waits for")
    def get(self, request: Request, job_id: UUID) -> Response:
        detail = selectors.job_detail_get(user=request.user, job_id=job_id)
        cid = detail.collection_id
        gallery = request.build_absolute_uri(
            gallery_path(user_id=detail.job.user_id, collection_id=cid)) if cid else None
        return Response({**JobOutputSerializer(detail.job).data,
                         "waiting": s.JobWaitOutputSerializer(detail.waiting).data,
                         "urls": {"gallery": gallery}})


class JobCancelView(APIView):
    @extend_schema(request=None, responses={200: JobOutputSerializer, **error_responses(409)},
                   summary="Cancel a job")
    def post(self, request: Request, job_id: UUID) -> Response:
        job = control.job_cancel(user=request.user, job_id=job_id)
        return Response(JobOutputSerializer(job).data)


class JobRetryView(APIView):
    @extend_schema(request=s.JobRetryInputSerializer,
                   responses={200: JobOutputSerializer, **error_responses(402, 409, 422)},
                   summary="Re-run the failed generations of a job")
    def post(self, request: Request, job_id: UUID) -> Response:
        body = s.JobRetryInputSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        job = control.job_retry(user=request.user, job_id=job_id,
                                refresh_workflows=body.validated_data["refresh_workflows"])
        return Response(JobOutputSerializer(job).data)


class GenerationReplayView(APIView):
    @extend_schema(request=None, responses={202: s.ReplayOutputSerializer,
                                            **error_responses(402, 404, 409)},
                   summary="Replay a completed generation without the cache, then compare "
                           "each step with the original (identical, equivalent or drifted)")
    def post(self, request: Request, job_id: UUID, gid: int) -> Response:
        job = replay.generation_replay(user=request.user, job_id=job_id, gid=gid)
        return Response(s.ReplayOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: s.ReplayOutputSerializer, **error_responses(404)},
                   summary="The latest replay of a generation and its verdict")
    def get(self, request: Request, job_id: UUID, gid: int) -> Response:
        job = replay.replay_latest(user=request.user, job_id=job_id, gid=gid)
        return Response(s.ReplayOutputSerializer(job).data)
