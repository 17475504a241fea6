#!/usr/bin/env python
"""Django's command-line utility for the multi-vendor example.

Migrate each alias on its own: ``python manage.py migrate --database=default``,
then ``--database=legacy`` and ``--database=local`` (the router decides which
app's tables go where).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run from anywhere: the project's packages live next to this file.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multivendor.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
