from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "emprops.accounts"
    label = "accounts"
    verbose_name = "Accounts and credits"
    default_auto_field = "django.db.models.BigAutoField"
