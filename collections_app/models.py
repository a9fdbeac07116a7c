"""Projects, collections, their steps (components), files, previews, remixes and history."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="projects")
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=8, default="v2")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "project"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["user"], condition=models.Q(is_default=True),
                                    name="one_default_project_per_user"),
        ]

    def __str__(self) -> str:
        return self.name


class Collection(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    class Blockchain(models.TextChoices):
        ETHEREUM = "ETHEREUM"
        BASE = "BASE"
        TEZOS = "TEZOS"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="collections")
    title = models.CharField(max_length=300, blank=True, default="")
    description = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    archived = models.BooleanField(default=False)
    batch_max_tokens = models.IntegerField(null=True, blank=True)
    batch_mint_enabled = models.BooleanField(default=False)
    blockchain = models.CharField(max_length=16, choices=Blockchain.choices, null=True,
                                  blank=True)
    cover_image_url = models.CharField(max_length=1000, null=True, blank=True)
    editions = models.IntegerField(null=True, blank=True)
    encryption_enabled = models.BooleanField(default=False)
    images = models.JSONField(null=True, blank=True)
    is_current = models.BooleanField(default=True)
    price = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    publish_date = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collection"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "archived", "-publish_date"])]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Component(models.Model):
    """One row per step of a collection's data; ids start at 1,000,000 (see migration 0002)."""

    id = models.BigAutoField(primary_key=True)
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE,
                                   related_name="components")
    node_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "component"


class FlatFile(models.Model):
    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="flat_files")
    name = models.CharField(max_length=500)
    storage_key = models.CharField(max_length=1000, unique=True)
    mime_type = models.CharField(max_length=200, null=True, blank=True)
    hidden = models.BooleanField(default=False)
    rel_id = models.CharField(max_length=200, null=True, blank=True, db_index=True)
    rel_type = models.CharField(max_length=100, null=True, blank=True)
    tags = models.JSONField(default=list, blank=True)
    gen_in_data = models.JSONField(null=True, blank=True)
    gen_out_data = models.JSONField(null=True, blank=True)
    # the generation's traits (variable name -> picked value), so a collection's outputs can be
    # filtered by them
    features = models.JSONField(default=dict, blank=True)
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "flat_file"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class ComponentFlatFile(models.Model):
    component = models.ForeignKey(Component, on_delete=models.CASCADE,
                                  related_name="component_files")
    flat_file = models.ForeignKey(FlatFile, on_delete=models.CASCADE,
                                  related_name="component_links")

    class Meta:
        db_table = "component_flat_file"
        constraints = [models.UniqueConstraint(fields=["component", "flat_file"],
                                               name="uniq_component_flat_file")]


class CollectionPreview(models.Model):
    class AccessLevel(models.TextChoices):
        PUBLIC = "PUBLIC"
        PRIVATE = "PRIVATE"

    collection = models.OneToOneField(Collection, on_delete=models.CASCADE,
                                      related_name="preview")
    enabled = models.BooleanField(default=False)
    max_generations = models.IntegerField(default=10)
    total_generations = models.IntegerField(default=0)
    access_level = models.CharField(max_length=16, choices=AccessLevel.choices,
                                    default=AccessLevel.PRIVATE)
    is_remixable = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collection_preview"


class CollectionPreviewVersion(models.Model):
    preview = models.ForeignKey(CollectionPreview, on_delete=models.CASCADE,
                                related_name="versions")
    version = models.IntegerField()
    is_latest = models.BooleanField(default=True)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "collection_preview_version"
        ordering = ["-version"]
        constraints = [models.UniqueConstraint(fields=["preview", "version"],
                                               name="uniq_preview_version")]


class CollectionRemix(models.Model):
    source = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="remixes")
    target = models.OneToOneField(Collection, on_delete=models.CASCADE, related_name="remixed_from")
    version = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "collection_remix"
        verbose_name_plural = "collection remixes"


class CollectionHistory(models.Model):
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="history")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                             related_name="+")
    action = models.CharField(max_length=50)
    changed_fields = models.JSONField(default=list)
    data_before = models.JSONField(null=True, blank=True)
    data_after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "collection_history"
        ordering = ["created_at", "id"]
        verbose_name_plural = "collection histories"
