import logging

from django.apps import AppConfig


class MeshcoreConfig(AppConfig):
    name = "meshcore"
    verbose_name = "Mesh"

    def ready(self) -> None:
        # Registers checks, the OpenAPI extension and write guards; nothing starts here (see `serve`).
        from meshcore import checks  # noqa: F401
        from meshcore.api import schema  # noqa: F401
        from meshcore.replication import guards

        guards.connect()
        # Python warnings go through logging too, so every line a process writes has the configured format.
        logging.captureWarnings(True)
