"""ENGINE = "tests.integration.prometheus_db": the README's module recipe, as a project has it.

django-prometheus' PostgreSQL backend on django_sapool's pool, through
``django_sapool.pooled_wrapper()`` in ``base.py`` (test_prometheus_backend.py).
"""
