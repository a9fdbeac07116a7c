"""The staff tool's surface, mounted at `api/staff/<staff_key>/` (see emprops/urls.py)."""

from django.urls import path, re_path

import emprops.converters  # noqa: F401 - registers the `name` converters
from workflows_app.api import views

urlpatterns = [
    path("workflows", views.StaffWorkflowListCreateView.as_view(), name="staff-workflows"),
    path("workflows/name/<name:name>", views.StaffWorkflowByNameView.as_view(),
         name="staff-workflow-by-name"),
    path("workflows/<uuid:workflow_id>", views.StaffWorkflowDetailView.as_view(),
         name="staff-workflow-detail"),
    path("servers", views.StaffServerListView.as_view(), name="staff-servers"),
    path("servers/<name:name>/check", views.StaffServerCheckView.as_view(),
         name="staff-server-check"),
    path("form-configs", views.StaffFormConfigListCreateView.as_view(), name="staff-form-configs"),
    path("form-configs/name/<name:name>", views.StaffFormConfigByNameView.as_view(),
         name="staff-form-config-by-name"),
    path("form-configs/<uuid:form_config_id>", views.StaffFormConfigDetailView.as_view(),
         name="staff-form-config-detail"),
    path("models", views.StaffModelListCreateView.as_view(), name="staff-models"),
    path("models/name/<slashed_name:name>", views.StaffModelByNameView.as_view(),
         name="staff-model-by-name"),
    path("custom-nodes", views.StaffCustomNodeListCreateView.as_view(), name="staff-custom-nodes"),
    # `collections` is served by collections_app (emprops/urls.py mounts it before this include)
    re_path(r"^.*$", views.StaffNotFoundView.as_view()),
]
