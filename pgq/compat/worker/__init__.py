"""``celery.worker`` names for Celery code that registers its own remote control commands."""
