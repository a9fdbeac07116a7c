from django.contrib import admin

from jobs_app.models import Generation, Job, JobEvent, JobHistory, NodeRun


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "user", "job_type", "status", "progress", "priority",
                    "created_at", "completed_at"]
    list_filter = ["status", "job_type"]
    search_fields = ["name", "id", "user__username"]
    date_hierarchy = "created_at"


@admin.register(NodeRun)
class NodeRunAdmin(admin.ModelAdmin):
    list_display = ["job", "gid", "step_id", "node_name", "queue", "status", "attempt",
                    "lease_until", "next_attempt_at"]
    list_filter = ["status", "queue", "node_name"]
    search_fields = ["job__id"]


admin.site.register(Generation)
admin.site.register(JobHistory)
admin.site.register(JobEvent)
