"""The conformance kit (a package so its conftest does not shadow ``tests/conftest.py``)."""
