"""Locust: alerts over the plain length-prefixed TCP baseline, one port per user.

locust -f harness/locustfiles/locust_tcp.py --headless -u 4 -r 4 -t 30s --csv out/locust/tcp
"""

from harness.kafka_cluster import free_port
from harness.locustfiles.common import AlertStreamUser


class TcpAlertUser(AlertStreamUser):
    transport_kind = "tcp"

    def stream_url(self) -> str:
        return f"tcp://127.0.0.1:{free_port()}"
