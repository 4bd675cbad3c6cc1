import logging

from django.apps import AppConfig


class MeshcoreConfig(AppConfig):
    name = "meshcore"
    verbose_name = "Mesh"

    def ready(self) -> None:
        """Register checks, the OpenAPI extension, the write guards and the projection's hooks.

        Nothing starts here (see `serve`): this also runs in `migrate`, `shell` and Celery. The imports
        are here because these modules need the app registry loaded, as Django's own apps do.
        """
        from meshcore import (
            checks,  # noqa: F401
            events,
            registry,
            writeguard,
        )
        from meshcore.api import schema  # noqa: F401
        from meshcore.live.node_auth import forget_tokens_on_change
        from meshcore.replication.hooks import projection_hooks
        from meshcore.routing.view import routing_view

        writeguard.connect_auth_guards()
        writeguard.UserWrites.route_to(
            save=lambda user: registry.save_user(actor=None, user=user),
            delete=lambda user: registry.delete_user(actor=None, user=user),
        )
        projection_hooks.set_events(events.record_batch_events, events.publish_events)
        projection_hooks.add_listener(forget_tokens_on_change)
        projection_hooks.add_listener(routing_view.desired_changed)
        # Python warnings go through logging too, so every line a process writes has the configured format.
        logging.captureWarnings(True)
