"""Celery workers of the seem-vos service: run tracking jobs and publish their frames."""
