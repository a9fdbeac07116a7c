from django.urls import path

from generation_app.api import views

urlpatterns = [
    path("collections/<uuid:collection_id>/generations", views.CollectionGenerateView.as_view(),
         name="collection-generations"),
    path("jobs/<uuid:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
]
