from django.urls import path

from generation_app.api import workflow_views as views

urlpatterns = [
    path("workflows/<uuid:workflow_id>/quote", views.WorkflowQuoteView.as_view(),
         name="workflow-quote"),
    path("workflows/<uuid:workflow_id>/test", views.WorkflowTestView.as_view(),
         name="workflow-test"),
    path("instruction-sets/credits", views.InstructionSetCreditsView.as_view(),
         name="instruction-set-credits"),
]
