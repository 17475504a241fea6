import django_sapool

DatabaseWrapper = django_sapool.pooled_wrapper("django.db.backends.mysql")
