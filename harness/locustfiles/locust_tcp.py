"""Locust: alerts over the plain length-prefixed TCP baseline, one port per user.

locust -f harness/locustfiles/locust_tcp.py --headless -u 4 -r 4 -t 30s --csv out/locust/tcp
"""

from alertbench.harness.locustfiles.common import AlertStreamUser


class TcpAlertUser(AlertStreamUser):
    transport_kind = "tcp"
