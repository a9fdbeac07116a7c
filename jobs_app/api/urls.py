from django.urls import path

from jobs_app import events
from jobs_app.api import views

urlpatterns = [
    path("jobs", views.JobListView.as_view(), name="jobs"),
    path("jobs/<uuid:job_id>/history", views.JobHistoryView.as_view(), name="job-history"),
    path("jobs/<uuid:job_id>/events", events.job_events, name="job-events"),
    path("jobs/<uuid:job_id>/events/token", views.JobEventsTokenView.as_view(),
         name="job-events-token"),
]
