"""Optional integrations with other Django packages, each an app of its own.

Nothing here is imported by django_sapool itself: each integration needs its
package (an extra of django-sapool) only when it is installed.
"""
