"""`python manage.py seed_demo [--json]`: give the demo user the demo collections (idempotent)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from collections_app.services_demo import demo_collections_seed


class Command(BaseCommand):
    help = ("Create the demo collections (p5, js and p52vid sketches that need no external "
            "service) for the demo user; a second run changes nothing and keeps the user's edits.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="demo",
                            help="the owner (default: the demo user that bootstrap_demo makes)")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}: run `manage.py bootstrap_demo` first.")
        seeded = demo_collections_seed(user=user)
        rows = [{"key": s.key, "id": str(s.collection.id), "title": s.collection.title,
                 "outcome": s.outcome} for s in seeded]
        if options["json"]:
            self.stdout.write(json.dumps({"collections": rows}))
        else:
            for row in rows:
                self.stdout.write(f"{row['title']} {row['id']} ({row['outcome']})")
