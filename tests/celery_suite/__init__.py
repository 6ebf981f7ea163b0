"""Celery 5.7's own integration suite run on pgq and on real Celery (a package so its module
names stay apart from the rest of the tests tree)."""
