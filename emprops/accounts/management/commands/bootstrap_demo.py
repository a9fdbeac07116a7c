"""Make the admin and demo users, revoke the previous demo keys and mint fresh ones."""

from __future__ import annotations

import json
import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from emprops.accounts import services
from emprops.accounts.models import CreditType, User, UserApiKey


class Command(BaseCommand):
    help = "Create admin + demo users and print fresh demo keys (previous demo keys are revoked)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        password = _password(settings.VAR_DIR / "admin-password")
        # the demo user signs in to the gallery (`/`) with this one
        demo_password = _password(settings.VAR_DIR / "demo-password")
        with transaction.atomic():
            admin = User.objects.filter(username="admin").first()
            if admin is None:
                admin = services.user_provision(username="admin", is_staff=True,
                                                free_credits=None)
            admin.is_staff = admin.is_superuser = True
            admin.set_password(password)
            admin.save()
            demo = User.objects.filter(username="demo").first() or services.user_provision(
                username="demo")
            demo.set_password(demo_password)
            demo.save(update_fields=["password"])
            # the demo account is for trying things: keep it topped up to DEMO_CREDITS (a grant,
            # through the ledger like any other)
            have = services.credits_summary(user=demo)["total"]
            floor = Decimal(os.environ.get("DEMO_CREDITS", "100"))
            if Decimal(have) < floor:
                services.credits_grant(user=demo, amount=floor - Decimal(have),
                                       credit_type=CreditType.PERMANENT,
                                       comment="Demo account top-up")
            UserApiKey.objects.filter(is_demo=True, is_active=True).update(is_active=False)
            _, api_key = services.api_key_create(user=demo, name="demo", is_demo=True)
            _, staff_key = services.api_key_create(user=admin, name="staff demo", is_demo=True)
        result = {"api_key": api_key, "staff_key": staff_key, "admin_password": password}
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"API key: {api_key}\nStaff key: {staff_key}")


def _password(path: Path) -> str:
    """The password kept in `path` (0600), made on first use."""
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password
