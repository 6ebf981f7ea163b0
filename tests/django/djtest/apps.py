from django.apps import AppConfig


class DjtestConfig(AppConfig):
    name = "djtest"
