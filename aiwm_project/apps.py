from django.apps import AppConfig


class AiwmProjectConfig(AppConfig):
    name = "aiwm_project"
    verbose_name = "AIWM"
