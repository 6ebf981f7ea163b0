"""``celery.contrib.testing`` after the import swap (the code: ``pgq.contrib.testing``)."""
