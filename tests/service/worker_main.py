"""Start a Celery worker with the test engines registered: ``python worker_main.py <celery worker args>``."""

import sys

from fault_engines import register_fault_engines
from service_engines import register_test_engines

register_test_engines()
register_fault_engines()

from celery.__main__ import main  # noqa: E402  (the engines must be registered before workers.tasks is imported)

if __name__ == "__main__":
    sys.argv = ["celery", "-A", "workers.app", "worker", *sys.argv[1:]]
    sys.exit(main())
