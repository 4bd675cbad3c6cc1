#!/usr/bin/env python
"""Django's command-line utility for infermesh."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infermesh_site.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # The message says what to set; a traceback through Django's settings loader only hides it.
        sys.exit(f"Configuration error: {error}")
    except Exception as error:
        # A write the registry refused (no quorum, a conflict), from any command, Django's own included.
        registry = sys.modules.get("meshcore.registry")
        if registry is not None and isinstance(error, registry.RegistryError):
            sys.exit(f"Error: {error}")
        raise


if __name__ == "__main__":
    main()
