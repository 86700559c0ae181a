"""Locust: alerts over gRPC streaming, one in-process AlertStream server per user.

locust -f harness/locustfiles/locust_grpc.py --headless -u 4 -r 4 -t 30s --csv out/locust/grpc
"""

import grpc.experimental.gevent as grpc_gevent
from alertbench.harness.locustfiles.common import AlertStreamUser

grpc_gevent.init_gevent()  # gRPC's own threads must cooperate with locust's greenlets


class GrpcAlertUser(AlertStreamUser):
    transport_kind = "grpc"
