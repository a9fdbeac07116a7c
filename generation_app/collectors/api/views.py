"""Collector endpoints: wallet sign-in, purchases, collects and what collectors and owners see."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.api import WWW_AUTHENTICATE, error_responses
from emprops.authentication import failed_auth_limit, issue_tokens
from emprops.views import ViewerListView
from generation_app.collectors import selectors
from generation_app.collectors.api import serializers as s
from generation_app.collectors.services import collects, identity, purchases


class CollectorNonceView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=s.CollectorNonceOutputSerializer,
                   summary="A single-use nonce for a Sign-In with Ethereum message")
    def get(self, request: Request) -> Response:
        nonce = identity.nonce_issue()
        return Response(s.CollectorNonceOutputSerializer(nonce).data)


class CollectorLoginView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE

    @extend_schema(request=s.CollectorLoginInputSerializer,
                   responses={200: s.CollectorLoginOutputSerializer, **error_responses(401)},
                   summary="Sign in with a wallet (EIP-4361): a collector token")
    def post(self, request: Request) -> Response:
        body = s.CollectorLoginInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        farcaster = None
        if any(k in v for k in ("farcaster_id", "farcaster_username", "farcaster_pfp")):
            farcaster = identity.Farcaster(fid=v.get("farcaster_id"),
                                           username=v.get("farcaster_username") or "",
                                           pfp=v.get("farcaster_pfp") or "")
        with failed_auth_limit(request):
            collector = identity.collector_login(message=v["message"], signature=v["signature"],
                                                 host=request.get_host(), farcaster=farcaster)
        return Response(s.CollectorLoginOutputSerializer(
            {**issue_tokens(user=collector.user), "collector": collector}).data)


class CollectorMeView(APIView):
    @extend_schema(responses={200: s.CollectorSummaryOutputSerializer, **error_responses(403)},
                   summary="You as a collector: wallet and generations paid, used, pending")
    def get(self, request: Request) -> Response:
        return Response(s.CollectorSummaryOutputSerializer(
            selectors.collector_summary(user=request.user)).data)


class CollectorPurchaseListView(ViewerListView):
    serializer_class = s.PurchaseOutputSerializer

    @extend_schema(summary="Your purchases (newest first)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list_for_viewer(self) -> QuerySet[Any]:
        return selectors.collector_purchases(user=self.request.user)


class CollectorGenerationListView(ViewerListView):
    serializer_class = s.CollectedGenerationOutputSerializer

    @extend_schema(summary="Your collected generations and their outputs (newest first)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list_for_viewer(self) -> QuerySet[Any]:
        return selectors.collector_generations(user=self.request.user)


class CollectionPurchaseView(APIView):
    @extend_schema(request=s.PurchaseInputSerializer,
                   responses={201: s.PurchaseOutputSerializer, 202: s.PurchaseOutputSerializer,
                              **error_responses(403, 409, 422, 503)},
                   summary="Pay for generations with a transaction (verified on chain): 201 "
                           "confirmed, 202 pending confirmations")
    def post(self, request: Request, collection_id: UUID) -> Response:
        body = s.PurchaseInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payment = purchases.purchase_submit(user=request.user, collection_id=collection_id,
                                            tx_hash=body.validated_data["tx_hash"])
        confirmed = payment.payment_status == payment.Status.CONFIRMED
        return Response(s.PurchaseOutputSerializer(payment).data,
                        status=status.HTTP_201_CREATED if confirmed else status.HTTP_202_ACCEPTED)


class CollectionCollectView(APIView):
    @extend_schema(request=None,
                   responses={202: s.CollectedGenerationOutputSerializer,
                              **error_responses(402, 403, 409, 422)},
                   summary="Spend one paid generation of a published collection")
    def post(self, request: Request, collection_id: UUID) -> Response:
        generation = collects.collect_start(user=request.user, collection_id=collection_id)
        return Response(s.CollectedGenerationOutputSerializer(generation).data,
                        status=status.HTTP_202_ACCEPTED)


class CollectionSaleListView(ViewerListView):
    serializer_class = s.SaleOutputSerializer

    @extend_schema(summary="Sales of one of your collections (newest first)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list_for_viewer(self) -> QuerySet[Any]:
        return selectors.collection_sales(user=self.request.user,
                                          collection_id=self.kwargs["collection_id"])


class CollectionCollectorListView(ViewerListView):
    serializer_class = s.CollectionCollectorOutputSerializer

    @extend_schema(summary="Collectors of one of your collections")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list_for_viewer(self) -> QuerySet[Any]:
        return selectors.collection_collectors(user=self.request.user,
                                               collection_id=self.kwargs["collection_id"])
