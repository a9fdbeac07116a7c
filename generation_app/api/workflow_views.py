"""Quotes and test runs of workflows: they need the generation layer, so they live here."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.api import error_responses
from generation_app.services import workflow_quotes


class WorkflowQuoteInputSerializer(serializers.Serializer):
    inputs = serializers.DictField(required=False, default=dict,
                                   help_text="Form values by field id (defaults fill the rest).")
    count = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1000)


class InstructionSetQuoteInputSerializer(serializers.Serializer):
    request = serializers.JSONField(help_text="A GenerationInput (v2).")


class QuoteStepOutputSerializer(serializers.Serializer):
    nodeName = serializers.CharField()  # noqa: N815
    stepId = serializers.IntegerField()  # noqa: N815
    cost = serializers.FloatField()


class QuoteOutputSerializer(serializers.Serializer):
    per_generation = serializers.FloatField()
    total_cost = serializers.FloatField()
    generations = serializers.IntegerField()
    breakdown = QuoteStepOutputSerializer(many=True)


class WorkflowTestOutputSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()  # noqa: N815


class WorkflowQuoteView(APIView):
    @extend_schema(request=WorkflowQuoteInputSerializer, responses=QuoteOutputSerializer,
                   summary="What `count` generations of a workflow with these inputs would cost")
    def post(self, request: Request, workflow_id: UUID) -> Response:
        body = WorkflowQuoteInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        quote = workflow_quotes.workflow_quote(user=request.user, workflow_id=workflow_id,
                                               inputs=body.validated_data["inputs"],
                                               count=body.validated_data["count"])
        return Response(QuoteOutputSerializer(quote).data)


class InstructionSetCreditsView(APIView):
    @extend_schema(request=InstructionSetQuoteInputSerializer, responses=QuoteOutputSerializer,
                   summary="What a GenerationInput would cost (all steps × its generations)")
    def post(self, request: Request) -> Response:
        body = InstructionSetQuoteInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        quote = workflow_quotes.instruction_set_quote(data=body.validated_data["request"])
        return Response(QuoteOutputSerializer(quote).data)


class WorkflowTestView(APIView):
    permission_classes = [permissions.IsAuthenticated, permissions.IsAdminUser]

    @extend_schema(request=None,
                   responses={202: WorkflowTestOutputSerializer, **error_responses(402, 422)},
                   summary="Run the workflow's test payload as a one-step job (staff)")
    def post(self, request: Request, workflow_id: UUID) -> Response:
        job = workflow_quotes.workflow_test_run(user=request.user, workflow_id=workflow_id)
        return Response({"jobId": str(job.id)}, status=status.HTTP_202_ACCEPTED)
