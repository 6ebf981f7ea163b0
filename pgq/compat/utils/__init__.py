"""Celery's ``celery.utils`` names that user code imports (only ``log`` so far)."""
