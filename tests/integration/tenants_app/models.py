"""Tenants (public schema) and one table of the same name in every tenant's schema."""

from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    name = models.CharField(max_length=100)
    # The child creates each schema and its table itself: saving a tenant must
    # not run migrate_schemas.
    auto_create_schema = False


class Domain(DomainMixin):
    pass


class Item(models.Model):
    """One table per tenant schema, same name, different rows."""

    name = models.CharField(max_length=100)
