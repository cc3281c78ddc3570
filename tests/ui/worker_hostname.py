"""``[core] hostname_callable`` of the Celery test's workers: two workers on one machine
record different hostnames in their task instances (``ZDT_WORKER_HOSTNAME``)."""

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("ZDT_WORKER_HOSTNAME") or socket.getfqdn()
