"""Socket subscribers (tcp, VTP) redial a server that accepts and at once closes with a
growing pause, not in a tight loop (one refused by a VTP broker's allow-list once redialled
about a thousand times a second)."""

from __future__ import annotations

import socket
import threading
import time

from alertbench.transports.tcp import TcpSubscriber


def test_a_server_that_closes_every_connection_is_not_redialled_in_a_tight_loop() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()
    accepted = 0

    def refuse_all() -> None:
        nonlocal accepted
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted += 1
            conn.close()

    thread = threading.Thread(target=refuse_all, daemon=True)
    thread.start()
    sub = TcpSubscriber(server.getsockname()[:2], connect_timeout=2)
    time.sleep(1.5)
    sub.close()
    stop.set()
    thread.join(5)
    server.close()
    assert 2 <= accepted <= 12, f"{accepted} connections in 1.5 s"
