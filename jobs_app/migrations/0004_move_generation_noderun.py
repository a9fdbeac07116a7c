"""Generation and NodeRun move to generation_app: state only, the tables stay."""

from django.db import migrations


class Migration(migrations.Migration):

    # The tables stay (same db_table): only Django's idea of which app owns them moves. It runs
    # after generation_app 0003, which still reads node runs as jobs_app's.
    dependencies = [
        ('jobs_app', '0003_frozen_plan'),
        ('generation_app', '0003_freeze_unfinished_jobs'),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=[
        migrations.RemoveField(
            model_name='noderun',
            name='job',
        ),
        migrations.DeleteModel(
            name='Generation',
        ),
        migrations.DeleteModel(
            name='NodeRun',
        ),
    ])]
