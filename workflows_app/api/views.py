from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.accounts.services import API_KEY_PREFIX, api_key_authenticate
from emprops.api import error_responses
from emprops.errors import NotFound
from emprops.views import ViewerListView
from workflows_app import selectors, services
from workflows_app.api import serializers as s
from workflows_app.models import Workflow


class WorkflowFilter(django_filters.FilterSet):
    componentGroup = django_filters.CharFilter(method="filter_component_group",  # noqa: N815
                                               help_text="form.config.componentGroup")
    model = django_filters.CharFilter(method="filter_model",
                                      help_text="Workflows using the model of this name.")

    class Meta:
        model = Workflow
        fields = ["type", "output_mime_type", "display"]

    def filter_component_group(self, qs: QuerySet[Workflow], name: str,
                               value: str) -> QuerySet[Workflow]:
        return selectors.workflow_filter_component_group(qs, value)

    def filter_model(self, qs: QuerySet[Workflow], name: str, value: str) -> QuerySet[Workflow]:
        return selectors.workflow_filter_model(qs, value)


class _WorkflowOutputMixin:
    """Staff see full rows, consumers the consumer representation; a page's option lists are
    loaded once for all of its forms."""

    def workflow_serializer(self, instance: Any, *, many: bool = False) -> Any:
        request: Request = self.request  # type: ignore[attr-defined]
        rows = list(instance) if many else [instance]
        confs = selectors.form_conf_map(forms=[(w.data or {}).get("form") for w in rows])
        return s.workflow_output_serializer(request.user)(
            instance, many=many, context={"request": request, "confs": confs})


class WorkflowListView(_WorkflowOutputMixin, ViewerListView):
    serializer_class = s.WorkflowConsumerOutputSerializer
    filterset_class = WorkflowFilter
    search_fields = ["name", "label", "description"]
    ordering_fields = ["name", "order", "created_at"]

    def list_for_viewer(self) -> QuerySet[Workflow]:
        return selectors.workflow_visible_list(user=self.request.user)

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if not args:  # schema generation
            return super().get_serializer(*args, **kwargs)
        return self.workflow_serializer(args[0], many=kwargs.get("many", False))

    @extend_schema(summary="Workflows (staff see hidden ones and full rows)",
                   responses=s.WorkflowConsumerOutputSerializer(many=True))
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class WorkflowDetailView(_WorkflowOutputMixin, APIView):
    @extend_schema(responses=s.WorkflowConsumerOutputSerializer, summary="One workflow")
    def get(self, request: Request, workflow_id: UUID) -> Response:
        workflow = selectors.workflow_get(user=request.user, workflow_id=workflow_id)
        return Response(self.workflow_serializer(workflow).data)


class WorkflowByNameView(_WorkflowOutputMixin, APIView):
    @extend_schema(responses=s.WorkflowConsumerOutputSerializer, summary="A workflow by name")
    def get(self, request: Request, name: str) -> Response:
        workflow = selectors.workflow_get_by_name(user=request.user, name=name)
        return Response(self.workflow_serializer(workflow).data)


class WorkflowModelsView(generics.GenericAPIView):
    serializer_class = s.WorkflowModelRefOutputSerializer
    filter_backends: list[Any] = []

    @extend_schema(responses=s.WorkflowModelRefOutputSerializer(many=True),
                   summary="The models a workflow uses")
    def get(self, request: Request, workflow_id: UUID) -> Response:
        workflow = selectors.workflow_get(user=request.user, workflow_id=workflow_id)
        page = self.paginate_queryset(selectors.workflow_models(workflow=workflow))
        return self.get_paginated_response(s.WorkflowModelRefOutputSerializer(page, many=True).data)


class WorkflowFormView(APIView):
    @extend_schema(responses=s.WorkflowFormOutputSerializer,
                   summary="The form as JSON Schema, its fields with options, an example request")
    def get(self, request: Request, workflow_id: UUID) -> Response:
        workflow = selectors.workflow_get(user=request.user, workflow_id=workflow_id)
        form = selectors.workflow_form_description(workflow=workflow)
        return Response(s.WorkflowFormOutputSerializer(form).data)


# ---- users' secrets ------------------------------------------------------------------------------


class SecretListView(ViewerListView):
    serializer_class = s.SecretOutputSerializer
    filter_backends: list[Any] = []

    def list_for_viewer(self) -> Any:
        return selectors.secret_list(user=self.request.user)


class SecretDetailView(APIView):
    @extend_schema(request=s.SecretInputSerializer, responses=s.SecretOutputSerializer,
                   summary="Store your key for a workflow's third-party API (write-only)")
    def put(self, request: Request, workflow_name: str) -> Response:
        body = s.SecretInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        secret = services.secret_set(user=request.user, workflow_name=workflow_name,
                                     value=body.validated_data["value"])
        return Response(s.SecretOutputSerializer(secret).data)

    @extend_schema(request=None, responses={204: None}, summary="Forget your key for a workflow")
    def delete(self, request: Request, workflow_name: str) -> Response:
        services.secret_delete(user=request.user, workflow_name=workflow_name)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---- the staff tool surface: /api/staff/<staff key>/... ---------------------------------------


class StaffKeyPermission(permissions.BasePermission):
    """The path's key must be an active key of a staff user. Anything else is the same 404, so
    the surface never reveals whether a key exists."""

    def has_permission(self, request: Request, view: Any) -> bool:
        raw = getattr(view, "staff_key", "") or ""
        user = api_key_authenticate(raw=raw) if raw.startswith(API_KEY_PREFIX) else None
        if user is None or not user.is_staff:
            raise NotFound("Not found.")
        request.user = user
        return True


class StaffKeyAPIView(generics.GenericAPIView):
    """Base of the staff tool's views: authenticated by the key in the path only."""

    authentication_classes: list[Any] = []
    permission_classes = [StaffKeyPermission]
    filter_backends: list[Any] = []
    staff_key = ""

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.staff_key = kwargs.pop("staff_key", "")
        return super().dispatch(request, *args, **kwargs)

    def paginated(self, rows: Any, serializer: Any) -> Response:
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(serializer(page, many=True).data)


def _workflow_args(v: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v[k] for k in services.WORKFLOW_FIELDS if k in v}
    if fields.get("output_mime_type") == "":
        fields["output_mime_type"] = None
    args: dict[str, Any] = {"data": v.get("data"), "fields": fields,
                            "models": v.get("models"), "custom_nodes": v.get("custom_nodes")}
    for key in ("server", "server_id"):
        if key in v:
            args["server"] = v[key]
    return args


class StaffWorkflowListCreateView(StaffKeyAPIView):
    serializer_class = s.WorkflowStaffOutputSerializer

    @extend_schema(responses=s.WorkflowStaffOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.workflow_visible_list(user=request.user),
                              s.WorkflowStaffOutputSerializer)

    @extend_schema(request=s.StaffWorkflowInputSerializer,
                   responses={201: s.WorkflowStaffOutputSerializer, **error_responses(409)})
    def post(self, request: Request) -> Response:
        body = s.StaffWorkflowInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = dict(body.validated_data)
        workflow = services.workflow_create(name=v["name"], **_workflow_args(v))
        return Response(s.WorkflowStaffOutputSerializer(workflow).data,
                        status=status.HTTP_201_CREATED)


class StaffWorkflowByNameView(StaffKeyAPIView):
    serializer_class = s.WorkflowStaffOutputSerializer

    def get(self, request: Request, name: str) -> Response:
        workflow = selectors.workflow_get_by_name(user=request.user, name=name)
        return Response(s.WorkflowStaffOutputSerializer(workflow).data)


class StaffWorkflowDetailView(StaffKeyAPIView):
    serializer_class = s.WorkflowStaffOutputSerializer

    def get(self, request: Request, workflow_id: UUID) -> Response:
        workflow = selectors.workflow_get(user=request.user, workflow_id=workflow_id)
        return Response(s.WorkflowStaffOutputSerializer(workflow).data)

    @extend_schema(request=s.StaffWorkflowUpdateInputSerializer,
                   responses={200: s.WorkflowStaffOutputSerializer, **error_responses(409)},
                   summary="Update a workflow; `data` is merged key by key into the stored data")
    def put(self, request: Request, workflow_id: UUID) -> Response:
        body = s.StaffWorkflowUpdateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = dict(body.validated_data)
        workflow = services.workflow_update(workflow_id=workflow_id, name=v.get("name"),
                                            **_workflow_args(v))
        return Response(s.WorkflowStaffOutputSerializer(workflow).data)

    patch = put

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, workflow_id: UUID) -> Response:
        services.workflow_delete(workflow_id=workflow_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class StaffServerListView(StaffKeyAPIView):
    serializer_class = s.StaffServerOutputSerializer

    def get(self, request: Request) -> Response:
        return self.paginated(selectors.server_list(), s.StaffServerOutputSerializer)

    @extend_schema(request=s.StaffServerInputSerializer,
                   responses={201: s.StaffServerOutputSerializer, **error_responses(409)},
                   summary="Register a ComfyUI server")
    def post(self, request: Request) -> Response:
        body = s.StaffServerInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        server = services.server_create(**body.validated_data)
        return Response(s.StaffServerOutputSerializer(server).data,
                        status=status.HTTP_201_CREATED)


class StaffServerCheckView(StaffKeyAPIView):
    serializer_class = s.StaffServerCheckOutputSerializer

    @extend_schema(request=None, responses=s.StaffServerCheckOutputSerializer,
                   summary="Check a server: GET {url}/system_stats (ok false with the error "
                           "when it does not answer)")
    def post(self, request: Request, name: str) -> Response:
        server = selectors.server_get(name=name)
        return Response(s.StaffServerCheckOutputSerializer(
            services.server_check(server=server)).data)


class StaffFormConfigListCreateView(StaffKeyAPIView):
    serializer_class = s.StaffFormConfigOutputSerializer

    def get(self, request: Request) -> Response:
        return self.paginated(selectors.form_config_list(), s.StaffFormConfigOutputSerializer)

    @extend_schema(request=s.StaffFormConfigInputSerializer,
                   responses={201: s.StaffFormConfigOutputSerializer, **error_responses(409)})
    def post(self, request: Request) -> Response:
        body = s.StaffFormConfigInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fc = services.form_config_create(**body.validated_data)
        return Response(s.StaffFormConfigOutputSerializer(fc).data, status=status.HTTP_201_CREATED)


class StaffFormConfigByNameView(StaffKeyAPIView):
    serializer_class = s.StaffFormConfigOutputSerializer

    def get(self, request: Request, name: str) -> Response:
        return Response(s.StaffFormConfigOutputSerializer(
            selectors.form_config_get(name=name)).data)


class StaffFormConfigDetailView(StaffKeyAPIView):
    serializer_class = s.StaffFormConfigOutputSerializer

    @extend_schema(request=s.StaffFormConfigUpdateInputSerializer,
                   responses={200: s.StaffFormConfigOutputSerializer, **error_responses(409)})
    def put(self, request: Request, form_config_id: UUID) -> Response:
        body = s.StaffFormConfigUpdateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fc = services.form_config_update(form_config_id=form_config_id, **body.validated_data)
        return Response(s.StaffFormConfigOutputSerializer(fc).data)

    patch = put

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, form_config_id: UUID) -> Response:
        services.form_config_delete(form_config_id=form_config_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class StaffModelListCreateView(StaffKeyAPIView):
    serializer_class = s.StaffModelOutputSerializer

    def get(self, request: Request) -> Response:
        return self.paginated(selectors.model_list(), s.StaffModelOutputSerializer)

    @extend_schema(request=s.StaffModelInputSerializer,
                   responses={201: s.StaffModelOutputSerializer, **error_responses(409)})
    def post(self, request: Request) -> Response:
        body = s.StaffModelInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        model = services.model_create(**body.validated_data)
        return Response(s.StaffModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)


class StaffModelByNameView(StaffKeyAPIView):
    serializer_class = s.StaffModelOutputSerializer

    def get(self, request: Request, name: str) -> Response:
        return Response(s.StaffModelOutputSerializer(selectors.model_get(name=name)).data)


class StaffCustomNodeListCreateView(StaffKeyAPIView):
    serializer_class = s.StaffCustomNodeOutputSerializer

    def get(self, request: Request) -> Response:
        return self.paginated(selectors.custom_node_list(), s.StaffCustomNodeOutputSerializer)

    @extend_schema(request=s.StaffCustomNodeInputSerializer,
                   responses={201: s.StaffCustomNodeOutputSerializer, **error_responses(409)})
    def post(self, request: Request) -> Response:
        body = s.StaffCustomNodeInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = services.custom_node_create(**body.validated_data)
        return Response(s.StaffCustomNodeOutputSerializer(node).data,
                        status=status.HTTP_201_CREATED)


class StaffNotFoundView(StaffKeyAPIView):
    """Unknown paths under the staff prefix: an enveloped 404 that does not echo the path (it
    holds the key)."""

    schema = None  # not an operation

    def _not_found(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise NotFound("Not found.")

    get = post = put = patch = delete = _not_found
