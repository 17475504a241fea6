"""ENGINE modules of a project's own, as the README's "Pooling another backend" shows.

``ENGINE = "tests.integration.recipe.postgresql"`` (and ``.mysql``, ``.sqlite3``):
each ``base.py`` is the one line ``DatabaseWrapper = django_sapool.pooled_wrapper(...)``.
"""
