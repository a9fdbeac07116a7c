"""Make the admin and demo users, revoke the previous demo keys and mint fresh ones."""

from __future__ import annotations

import json
import os
import secrets
from decimal import Decimal
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
        password_file = settings.VAR_DIR / "admin-password"
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
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
