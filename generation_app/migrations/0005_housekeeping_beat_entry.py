"""The three periodic entries (reap, redeliver webhooks, run due schedules) became one
`housekeeping` entry. django-celery-beat's database scheduler keeps every entry it ever synced
from settings, so without this the old three would keep firing next to the new one."""

from django.db import migrations
from django.utils import timezone

OLD_ENTRIES = {
    "reap-node-runs": "generation.reap",
    "redeliver-webhooks": "generation.redeliver_webhooks",
    "run-due-schedules": "generation.run_due_schedules",
}


def remove_old_entries(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    removed = 0
    for name, task in OLD_ENTRIES.items():
        removed += PeriodicTask.objects.filter(name=name, task=task).delete()[0]
    if removed:
        # a running beat re-reads its schedule when this marker changes
        PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):

    dependencies = [
        ("generation_app", "0004_move_generation_noderun"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(remove_old_entries, migrations.RunPython.noop)]
