"""Generation and NodeRun, now generation_app's: state only, the tables (db_table) stay."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('generation_app', '0003_freeze_unfinished_jobs'),
        ('jobs_app', '0004_move_generation_noderun'),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=[
        migrations.CreateModel(
            name='Generation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('gid', models.IntegerField()),
                ('hash', models.CharField(max_length=200)),
                ('seed', models.BigIntegerField()),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('waiting', 'Waiting'), ('processing', 'Processing'), ('completed', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='pending', max_length=16)),
                ('variables', models.JSONField(default=dict)),
                ('position', models.BigIntegerField(default=0)),
                ('outputs', models.JSONField(blank=True, null=True)),
                ('error', models.TextField(blank=True, null=True)),
                ('failure_type', models.CharField(blank=True, max_length=32, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('completed_at', models.DateTimeField(blank=True, null=True)),
                ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='generations', to='jobs_app.job')),
            ],
            options={
                'db_table': 'job_generation',
                'ordering': ['job', 'gid'],
                'constraints': [models.UniqueConstraint(fields=('job', 'gid'), name='uniq_job_gid')],
            },
        ),
        migrations.CreateModel(
            name='NodeRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('gid', models.IntegerField()),
                ('step_id', models.BigIntegerField()),
                ('node_name', models.CharField(max_length=200)),
                ('alias', models.CharField(blank=True, max_length=300, null=True)),
                ('queue', models.CharField(default='engine', max_length=100)),
                ('depends_on', models.JSONField(blank=True, default=list)),
                ('inline', models.BooleanField(default=False)),
                ('workflow_digest', models.CharField(blank=True, max_length=64, null=True)),
                ('status', models.CharField(choices=[('blocked', 'Blocked'), ('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('skipped', 'Skipped')], default='blocked', max_length=16)),
                ('attempt', models.IntegerField(default=0)),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('queued_at', models.DateTimeField(blank=True, null=True)),
                ('announced_at', models.DateTimeField(blank=True, null=True)),
                ('progress', models.FloatField(default=0)),
                ('output', models.JSONField(blank=True, null=True)),
                ('error', models.TextField(blank=True, null=True)),
                ('worker', models.CharField(blank=True, max_length=200, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('completed_at', models.DateTimeField(blank=True, null=True)),
                ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='node_runs', to='jobs_app.job')),
            ],
            options={
                'db_table': 'node_run',
                'ordering': ['job', 'gid', 'id'],
                'indexes': [models.Index(fields=['status', 'next_attempt_at'], name='node_run_status_78aa90_idx'), models.Index(fields=['status', 'lease_until'], name='node_run_status_f6c6f6_idx')],
                'constraints': [models.UniqueConstraint(fields=('job', 'gid', 'step_id'), name='uniq_node_run')],
            },
        ),
    ])]
