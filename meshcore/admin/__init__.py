"""The Django admin for the mesh.

Desired state (nodes, models, runtimes, policies, API tokens, users and groups) is edited
here, but every write goes through `meshcore.registry`, outside any transaction, with the
signed-in user as the actor, only the fields the user changed, and the version the user
loaded (a concurrent edit is a conflict, shown as a message). Observed state (GPUs, model
instances, events, health) is view-only. Token values are shown once, when issued, and
never stored.

One module per concern: `base` (shared behaviour), `fleet`, `catalog`, `policies`, `access`, `events`.
Importing them registers their pages with the admin site.
"""

from django.contrib import admin

from meshcore.admin import access, catalog, events, fleet, policies  # noqa: F401  (registers the pages)

admin.site.site_header = "infermesh control plane"
admin.site.site_title = "infermesh"
admin.site.index_title = "Mesh registry"
