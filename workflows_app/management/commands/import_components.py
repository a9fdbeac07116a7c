"""`python manage.py import_components PATH [--dry-run]`: import a component-library folder."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emprops.errors import DomainError
from workflows_app.services import components_import


class Command(BaseCommand):
    help = ("Import a component-library folder: one workflow per sub-folder (upserted by name), "
            "_form_confs/*.json as form configs. Broken folders are reported and skipped.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Report what would change; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = components_import(root=options["path"], dry_run=options["dry_run"])
        except DomainError as exc:
            raise CommandError(exc.message) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if report["dry_run"]:
            self.stdout.write("dry run: nothing written")
        for key in ("created", "updated", "unchanged"):
            names = report[key]
            self.stdout.write(f"{key}: {len(names)}" + (f" ({', '.join(names)})" if names else ""))
        for name, changes in report["changes"].items():
            self.stdout.write(f"  {name}: {', '.join(changes)}")
        for key, names in report["form_configs"].items():
            if names:
                self.stdout.write(f"form configs {key}: {', '.join(names)}")
        for item in report["skipped"]:
            self.stderr.write(self.style.WARNING(f"skipped {item['name']}: {item['reason']}"))
