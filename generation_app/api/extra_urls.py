"""Webhooks, schedules and templates."""

from django.urls import path

from generation_app.api import schedule_views, template_views, webhook_views

urlpatterns = [
    path("webhooks/secret", webhook_views.WebhookSecretView.as_view(), name="webhook-secret"),
    path("webhooks/endpoints", webhook_views.WebhookEndpointListCreateView.as_view(),
         name="webhook-endpoints"),
    path("webhooks/endpoints/<uuid:endpoint_id>", webhook_views.WebhookEndpointDetailView.as_view(),
         name="webhook-endpoint-detail"),
    path("webhooks/deliveries", webhook_views.WebhookDeliveryListView.as_view(),
         name="webhook-deliveries"),
    path("webhooks/deliveries/<uuid:delivery_id>",
         webhook_views.WebhookDeliveryDetailView.as_view(), name="webhook-delivery-detail"),
    path("collections/<uuid:collection_id>/schedules",
         schedule_views.CollectionScheduleListCreateView.as_view(), name="collection-schedules"),
    path("schedules", schedule_views.ScheduleListView.as_view(), name="schedules"),
    path("schedules/<uuid:schedule_id>", schedule_views.ScheduleDetailView.as_view(),
         name="schedule-detail"),
    path("schedules/<uuid:schedule_id>/pause", schedule_views.SchedulePauseView.as_view(),
         name="schedule-pause"),
    path("schedules/<uuid:schedule_id>/resume", schedule_views.ScheduleResumeView.as_view(),
         name="schedule-resume"),
    path("schedules/<uuid:schedule_id>/runs", schedule_views.ScheduleRunListView.as_view(),
         name="schedule-runs"),
    path("templates", template_views.TemplateListCreateView.as_view(), name="templates"),
    path("templates/<uuid:template_id>", template_views.TemplateDetailView.as_view(),
         name="template-detail"),
    path("templates/<uuid:template_id>/collections",
         template_views.TemplateCollectionCreateView.as_view(), name="template-collections"),
]
