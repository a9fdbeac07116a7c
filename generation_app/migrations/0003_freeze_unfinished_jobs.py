"""Give node runs of jobs still running at upgrade time the frozen plan that new jobs get.

Before 0002 the graph was rebuilt from the live workflows at run time; this freezes what that
would have read, once: each unfinished run's dependencies, whether it runs inline, and a
snapshot of its workflow (stored once per content).
"""

import hashlib
import json

from django.db import migrations

ENGINE_INLINE = {"prompt"}
COMPONENT_READERS = {"js", "p5", "p52vid"}
VARIABLES_STEP_ID = 953


def _snapshot(wf):
    return {"id": str(wf.id), "name": wf.name, "type": wf.type, "data": wf.data or {},
            "output_mime_type": wf.output_mime_type,
            "server": wf.server.name if wf.server_id else None}


def _truthy(value):
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def freeze(apps, schema_editor):
    from generation_app.engine.dag import build_dag
    from workflows_app.forms import prompt_fields

    Job = apps.get_model("jobs_app", "Job")
    NodeRun = apps.get_model("jobs_app", "NodeRun")
    Workflow = apps.get_model("workflows_app", "Workflow")
    WorkflowSnapshot = apps.get_model("generation_app", "WorkflowSnapshot")
    unfinished = Job.objects.exclude(status__in=("completed", "failed", "cancelled"))
    for job in unfinished.iterator():
        steps = [s for s in (job.input or {}).get("steps") or []
                 if isinstance(s, dict) and s.get("id") != VARIABLES_STEP_ID]
        workflows = {w.name: w for w in Workflow.objects.select_related("server").filter(
            name__in={str(s.get("nodeName")) for s in steps})}

        def keys(name, workflows=workflows):
            wf = workflows.get(name)
            return prompt_fields((wf.data or {}).get("form")) if wf is not None else frozenset()

        deps = build_dag(steps, reads_all_components=COMPONENT_READERS.__contains__,
                         prompt_keys=keys)
        digests = {}
        for name, wf in workflows.items():
            snapshot = _snapshot(wf)
            text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
            digest = hashlib.sha256(text.encode()).hexdigest()
            WorkflowSnapshot.objects.get_or_create(digest=digest,
                                                   defaults={"name": name, "data": snapshot})
            digests[name] = digest
        by_id = {s.get("id"): s for s in steps}
        for run in NodeRun.objects.filter(job=job):
            step = by_id.get(run.step_id) or {}
            payload = step.get("nodePayload") or {}
            run.depends_on = sorted(d for d in deps.get(run.step_id, ()) if d != VARIABLES_STEP_ID)
            run.inline = (run.queue == "engine" and run.node_name in ENGINE_INLINE
                          and not _truthy(payload.get("llmEnable")))
            run.workflow_digest = digests.get(run.node_name)
            run.save(update_fields=["depends_on", "inline", "workflow_digest"])


class Migration(migrations.Migration):

    dependencies = [
        ("generation_app", "0002_frozen_plan"),
        ("jobs_app", "0003_frozen_plan"),
        ("workflows_app", "0001_initial"),
    ]

    operations = [migrations.RunPython(freeze, migrations.RunPython.noop)]
