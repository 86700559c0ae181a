"""Locust: VOEvent 2.0 over VTP, one in-process VTP broker per user (serializer: voevent).

locust -f harness/locustfiles/locust_vtp.py --headless -u 2 -r 2 -t 30s --csv out/locust/vtp
"""

import os

os.environ.setdefault("ALERTBENCH_SERIALIZER", "voevent")

from alertbench.harness.locustfiles.common import AlertStreamUser


class VtpAlertUser(AlertStreamUser):
    transport_kind = "vtp"
