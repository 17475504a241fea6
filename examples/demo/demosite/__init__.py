"""A tiny Django site for the django_sapool demo: one model, one view, one stats view."""
