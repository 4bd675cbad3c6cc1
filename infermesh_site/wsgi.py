"""WSGI entry for tools that need it; the mesh itself runs as ASGI through `manage.py serve`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infermesh_site.settings")
application = get_wsgi_application()
