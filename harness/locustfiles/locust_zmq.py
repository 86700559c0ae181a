"""Locust: alerts over ZeroMQ PUB/SUB (``ALERTBENCH_ZMQ_PATTERN=pushpull`` for PUSH/PULL).

locust -f harness/locustfiles/locust_zmq.py --headless -u 4 -r 4 -t 30s --csv out/locust/zmq
"""

import os

from alertbench.harness.locustfiles.common import AlertStreamUser

PATTERN = os.environ.get("ALERTBENCH_ZMQ_PATTERN", "pubsub")


class ZmqAlertUser(AlertStreamUser):
    transport_kind = f"zmq-{PATTERN}"
