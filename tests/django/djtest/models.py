from django.db import models


class Mark(models.Model):
    """A row a test task writes through the ORM (which process, which server session)."""

    label = models.CharField(max_length=100)
    pid = models.IntegerField()
    backend_pid = models.IntegerField()
