from django.apps import AppConfig


class GenerationAppConfig(AppConfig):
    name = "generation_app"
    verbose_name = "Generation"
    default_auto_field = "django.db.models.BigAutoField"
