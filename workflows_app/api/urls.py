from django.urls import path

import emprops.converters  # noqa: F401 - registers the `name` converters
from workflows_app.api import views

urlpatterns = [
    path("workflows", views.WorkflowListView.as_view(), name="workflows"),
    path("workflows/name/<name:name>", views.WorkflowByNameView.as_view(), name="workflow-by-name"),
    path("workflows/<uuid:workflow_id>", views.WorkflowDetailView.as_view(),
         name="workflow-detail"),
    path("workflows/<uuid:workflow_id>/models", views.WorkflowModelsView.as_view(),
         name="workflow-models"),
    path("workflows/<uuid:workflow_id>/form", views.WorkflowFormView.as_view(),
         name="workflow-form"),
    path("secrets", views.SecretListView.as_view(), name="secrets"),
    path("secrets/<name:workflow_name>", views.SecretDetailView.as_view(), name="secret-detail"),
]
