"""Workflows (component definitions) and what they need: servers, models, custom nodes, options."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Server(models.Model):
    """A ComfyUI server registered by staff (trusted: private addresses allowed)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    url = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "server"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Workflow(models.Model):
    class Type(models.TextChoices):
        BASIC = "basic"
        COMFY_WORKFLOW = "comfy_workflow"
        FETCH_API = "fetch_api"
        DIRECT_JOB = "direct_job"

    EXECUTABLE_TYPES = (Type.COMFY_WORKFLOW, Type.FETCH_API, Type.DIRECT_JOB)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    label = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=32, choices=Type.choices, default=Type.COMFY_WORKFLOW)
    data = models.JSONField(default=dict, blank=True)
    output_mime_type = models.CharField(max_length=100, null=True, blank=True)
    display = models.BooleanField(default=True)
    order = models.IntegerField(default=0)
    server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="workflows")
    est_gen_time = models.IntegerField(null=True, blank=True)
    machine_type = models.CharField(max_length=100, null=True, blank=True)
    min_vram = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workflow"
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class AIModel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=300, unique=True)
    download_url = models.CharField(max_length=1000, blank=True, default="")
    save_to = models.CharField(max_length=500, blank=True, default="")
    file_size = models.BigIntegerField(null=True, blank=True)
    hash = models.CharField(max_length=128, null=True, blank=True)
    auth_env_var = models.CharField(max_length=200, null=True, blank=True)
    is_auth_req = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "model"
        ordering = ["name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.name


class WorkflowModel(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="workflow_models")
    model = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="workflow_models")
    is_required = models.BooleanField(default=True)

    class Meta:
        db_table = "workflow_model"
        constraints = [models.UniqueConstraint(fields=["workflow", "model"], name="uniq_wf_model")]


class CustomNode(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=300, unique=True)
    download_url = models.CharField(max_length=1000, blank=True, default="")
    branch = models.CharField(max_length=200, null=True, blank=True)
    commit = models.CharField(max_length=100, null=True, blank=True)
    install_settings = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "custom_node"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkflowCustomNode(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE,
                                 related_name="workflow_custom_nodes")
    custom_node = models.ForeignKey(CustomNode, on_delete=models.CASCADE,
                                    related_name="workflow_custom_nodes")

    class Meta:
        db_table = "workflow_custom_node"
        constraints = [models.UniqueConstraint(fields=["workflow", "custom_node"],
                                               name="uniq_wf_custom_node")]


class FormConfig(models.Model):
    """A shared option list (samplers, schedulers ...) that form fields name by `conf_file`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "form_config"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UserApiSecret(models.Model):
    """A user's own key for a third-party API, encrypted at rest and never readable back."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_secrets")
    workflow_name = models.CharField(max_length=200)
    encrypted_value = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "user_api_secret"
        constraints = [models.UniqueConstraint(fields=["user", "workflow_name"],
                                               name="uniq_user_secret")]
