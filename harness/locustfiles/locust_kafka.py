"""Locust: alerts through Apache Kafka, one topic per user, on a running cluster.

    alertbench kafka start            # prints the bootstrap servers
    locust -f harness/locustfiles/locust_kafka.py --host kafka://127.0.0.1:PORT \\
        --headless -u 4 -r 4 -t 30s --csv out/locust/kafka
"""

from typing import Any

from alertbench.harness.locustfiles.common import AlertStreamUser, kafka_bootstrap


class KafkaAlertUser(AlertStreamUser):
    transport_kind = "kafka"

    def stream_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": kafka_bootstrap(self.host)}
