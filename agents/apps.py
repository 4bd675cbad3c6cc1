from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The agent that runs on GPU hosts (NVML and Triton collectors, reporting); see docs/agents.md."""

    name = "agents"
