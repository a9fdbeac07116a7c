"""Reads for accounts; every read takes the viewer, except the two that find the viewer."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from emprops.accounts.models import CreditsHistory, User, UserApiKey
from emprops.api import get_or_not_found


def user_get_active(*, user_id: Any) -> User | None:
    """The active user with this id (a token's `sub`), or None: a missing, inactive or malformed
    id looks the same."""
    try:
        pk = uuid.UUID(str(user_id))
    except ValueError:
        return None
    return User.objects.filter(pk=pk, is_active=True).first()


def user_get(*, user_id: Any) -> User:
    """Any user by id, or NotFound: a staff read, deliberately not scoped to a viewer."""
    return get_or_not_found(User.objects.all(), label="User", pk=user_id)


def api_key_list(*, user: User) -> QuerySet[UserApiKey]:
    return UserApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def credits_history_list(*, user: User) -> QuerySet[CreditsHistory]:
    return CreditsHistory.objects.filter(user=user).order_by("-created_at", "-id")
