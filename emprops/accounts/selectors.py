"""Reads for accounts; every read takes the viewer."""

from __future__ import annotations

from django.db.models import QuerySet

from emprops.accounts.models import CreditsHistory, User, UserApiKey


def api_key_list(*, user: User) -> QuerySet[UserApiKey]:
    return UserApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def credits_history_list(*, user: User) -> QuerySet[CreditsHistory]:
    return CreditsHistory.objects.filter(user=user).order_by("-created_at", "-id")
