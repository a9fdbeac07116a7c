from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "emprops.accounts"
    label = "accounts"
    verbose_name = "Accounts and credits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's usual `from .celery import app` in the project package's __init__, moved here
        # so importing `emprops` (the API client, the CLI) stays free of Django and Celery: every
        # process that sets Django up makes our app the current one before any task is sent.
        import emprops.celery  # noqa: F401
