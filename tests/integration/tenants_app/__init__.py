"""A django-tenants app for tests/integration/tenants_child.py: tenants, domains, items.

One app for both sides (it is in SHARED_APPS and TENANT_APPS): ``Client`` and
``Domain`` live in the public schema, ``Item`` in each tenant's schema. The
child creates the tables itself with the schema editor, so there are no
migrations.
"""
