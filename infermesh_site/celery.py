"""The Celery application that GPU-host agents run (`CELERY_*` settings)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infermesh_site.settings")

app = Celery("infermesh")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
