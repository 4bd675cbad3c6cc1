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


if __name__ == "__main__":
    main()
