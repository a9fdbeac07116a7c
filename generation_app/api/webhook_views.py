from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.views import ViewerListView
from generation_app.api import extra_serializers as s
from generation_app.models import WebhookDelivery
from generation_app.services import webhooks


class WebhookSecretView(APIView):
    @extend_schema(responses=s.WebhookSecretOutputSerializer,
                   summary="Your webhook signing secret (made on first read)")
    def get(self, request: Request) -> Response:
        return Response(s.WebhookSecretOutputSerializer(
            webhooks.webhook_secret_get(user=request.user)).data)

    @extend_schema(request=None, responses=s.WebhookSecretOutputSerializer,
                   summary="Rotate your webhook signing secret (the old one stops at once)")
    def post(self, request: Request) -> Response:
        return Response(s.WebhookSecretOutputSerializer(
            webhooks.webhook_secret_rotate(user=request.user)).data)


class WebhookEndpointListCreateView(ViewerListView):
    serializer_class = s.WebhookEndpointOutputSerializer
    filterset_fields = ["active"]
    ordering_fields = ["created_at"]

    def list_for_viewer(self) -> Any:
        return webhooks.webhook_endpoint_list(user=self.request.user)

    @extend_schema(request=s.WebhookEndpointInputSerializer,
                   responses={201: s.WebhookEndpointOutputSerializer},
                   summary="Add a webhook endpoint for all your jobs (no events: every event)")
    def post(self, request: Request) -> Response:
        body = s.WebhookEndpointInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(user=request.user, **body.validated_data)
        return Response(s.WebhookEndpointOutputSerializer(endpoint).data,
                        status=status.HTTP_201_CREATED)


class WebhookEndpointDetailView(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Delete a webhook endpoint")
    def delete(self, request: Request, endpoint_id: UUID) -> Response:
        webhooks.webhook_endpoint_delete(user=request.user, endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryFilter(django_filters.FilterSet):
    # a plain id filter: a model-choice filter would tell other users' job ids from missing ones
    job_id = django_filters.UUIDFilter(field_name="job_id")

    class Meta:
        model = WebhookDelivery
        fields = ["status", "event"]


class WebhookDeliveryListView(ViewerListView):
    serializer_class = s.WebhookDeliveryOutputSerializer
    filterset_class = WebhookDeliveryFilter
    ordering_fields = ["created_at"]

    def list_for_viewer(self) -> Any:
        return webhooks.webhook_delivery_list(user=self.request.user)


class WebhookDeliveryDetailView(APIView):
    @extend_schema(responses=s.WebhookDeliveryDetailOutputSerializer,
                   summary="One of your webhook deliveries with every attempt")
    def get(self, request: Request, delivery_id: UUID) -> Response:
        delivery = webhooks.webhook_delivery_get(user=request.user, delivery_id=delivery_id)
        return Response(s.WebhookDeliveryDetailOutputSerializer(delivery).data)
