from django.urls import path

from generation_app.api import unified_views, views

urlpatterns = [
    path("collections/generate", unified_views.UnifiedGenerateView.as_view(),
         name="collections-generate"),
    path("collections/generate/batch", unified_views.UnifiedBatchView.as_view(),
         name="collections-generate-batch"),
    path("collections/<uuid:collection_id>/generations", views.CollectionGenerateView.as_view(),
         name="collection-generations"),
    path("jobs/<uuid:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
    path("jobs/<uuid:job_id>/generations/<int:gid>/replay", views.GenerationReplayView.as_view(),
         name="generation-replay"),
]
