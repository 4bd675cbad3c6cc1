from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Celery tasks that run on GPU hosts: NVML and Triton collectors (built in a later issue)."""

    name = "agents"
