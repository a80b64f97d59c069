"""The typed service core shared by the API and the workers.

Dependency direction: ``api`` imports ``workers.core`` (never the Celery app's internals); ``workers`` tasks import
``workers.core``; ``workers.core`` imports only ``vos`` and libraries. So the API process needs no engine code to
run, and one module owns each concern:

* :mod:`workers.core.settings` - validated ``VOS_*`` settings (checked against each other);
* :mod:`workers.core.models` - the typed job record (:class:`Job`) and job spec (:class:`JobSpec`);
* :mod:`workers.core.store` - every Redis key, script and stream, sync and async, with retries;
* :mod:`workers.core.storage` - the job files under an fsspec URL;
* :mod:`workers.core.maintenance` - the reaper (lost leases, vanished records, orphan files) and retention.
"""
