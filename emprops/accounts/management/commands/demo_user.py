"""`python manage.py demo_user NAME`: provision a user (if new) and print a fresh API key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from emprops.accounts import services
from emprops.accounts.models import User


class Command(BaseCommand):
    help = "Provision a user named NAME (with FREE_CREDITS) and print an API key for it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        user = User.objects.filter(username=name).first() or services.user_provision(username=name)
        _, raw = services.api_key_create(user=user, name=f"demo_user {name}")
        self.stdout.write(raw)
