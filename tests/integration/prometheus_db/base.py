"""django-prometheus' PostgreSQL backend, pooled: the whole of a project's ``db/base.py``."""

import django_sapool

DatabaseWrapper = django_sapool.pooled_wrapper("django_prometheus.db.backends.postgresql")
