"""Settings for the test suite: the real settings, with a fixed key and a fast password hasher."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdefghijklmnop")
os.environ.setdefault("MESH_DATA_DIR", tempfile.mkdtemp(prefix="infermesh-test-"))
# In-process tests apply the log synchronously in their own transaction; tests/replication run real replicas.
os.environ.setdefault("MESH_REPLICATION", "local")
os.environ.setdefault("MESH_LOCAL_AGENT", "off")

from infermesh_site.settings import *  # noqa: F403

# Passwords are not what the suite tests; PBKDF2's deliberate slowness only costs time here.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests render pages without running collectstatic first.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
