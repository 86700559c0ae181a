"""The gRPC stream's batches (issue 15): several envelopes per stream message both ways, one
acknowledgement per batch, within each side's message limit, and nothing lost or reordered.

A stream message per alert was what held gRPC at 0.4x raw grpcio streaming: gRPC's Python cost is
per message. These tests hold the protocol to what makes batching safe; the throughput itself is
measured by ``alertbench capacity``, not here.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from alertbench.transports.base import Envelope, Start, get_transport
from alertbench.transports.grpc import SERVICE, AlertStreamServer, pb, pb_grpc

from alertbench.errors import ConfigError, TransportError
from tests.support.streams import drain

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _env(i: int, size: int = 2_000) -> Envelope:
    return Envelope(bytes([i % 256]) * size, "application/octet-stream", i, t_sent_ns=1 + i)


def _publish(url: str, n: int, size: int = 2_000, **options: Any) -> None:
    pub = get_transport(url, **options).open_publisher()
    for i in range(n):
        pub.publish(_env(i, size))
    assert pub.flush(20) == 0
    assert pub.counters()["acknowledged"] == n
    pub.close()


def test_a_burst_travels_in_batches_and_arrives_whole_and_in_order() -> None:
    n = 600
    with AlertStreamServer() as server:
        _publish(server.url, n)
        sub = get_transport(server.url).open_subscriber(Start.earliest())
        got = list(drain(sub, n, timeout=10))
        sub.close()
        counters = server.counters()
    assert [r.envelope.alert_id for r in got] == list(range(n))
    assert [r.envelope.sequence for r in got] == list(range(n))  # the server's numbering
    assert all(r.envelope.payload == _env(r.envelope.alert_id).payload for r in got)
    assert counters["accepted"] == n and counters["sent"] == n
    # Published faster than acknowledged, envelopes queued and went several to a message; the
    # subscriber came when all were retained, so it was sent full batches.
    assert counters["publish_batches"] < n, counters
    assert counters["subscribe_batches"] <= -(-n // 256) + 1, counters


def test_batch_bytes_one_sends_one_envelope_per_message() -> None:
    n = 50
    with AlertStreamServer(batch_bytes=1) as server:
        _publish(server.url, n, batch_bytes=1)
        sub = get_transport(server.url).open_subscriber(Start.earliest())
        got = list(drain(sub, n, timeout=10))
        sub.close()
        counters = server.counters()
    assert [r.envelope.alert_id for r in got] == list(range(n))
    assert counters["publish_batches"] == n and counters["subscribe_batches"] == n, counters


def test_a_subscriber_is_sent_no_message_over_its_own_limit() -> None:
    """The server would batch up to 4 MiB; a subscriber that takes 64 KiB says so in its
    request and gets batches of three 20 KB envelopes, never a message it would refuse."""
    limit = 64 * 1024
    n = 30
    with AlertStreamServer() as server:
        _publish(server.url, n, size=20_000)
        options = [*OWN_CONNECTION, ("grpc.max_receive_message_length", limit)]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            request = pb.SubscribeRequest(start=pb.SubscribeRequest.EARLIEST, max_batch_bytes=limit)
            call = pb_grpc.AlertStreamStub(channel).Subscribe(request, timeout=10)
            sizes: list[int] = []
            ids: list[int] = []
            for batch in call:
                sizes.append(len(batch.envelopes))
                ids.extend(e.alert_id for e in batch.envelopes)
                if len(ids) >= n:
                    call.cancel()
                    break
        # The same subscriber through the transport, with its max_message as the limit.
        sub = get_transport(server.url, max_message=limit).open_subscriber(Start.earliest())
        through_transport = [r.envelope.alert_id for r in drain(sub, n, timeout=10)]
        sub.close()
    assert ids == list(range(n))
    assert max(sizes) == 3 and len(sizes) == 10, sizes
    assert through_transport == list(range(n))


def test_an_empty_publish_batch_is_refused_with_the_reason_and_the_server_serves_on() -> None:
    with AlertStreamServer() as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_CONNECTION)
        with channel, pytest.raises(grpc.RpcError) as info:
            list(pb_grpc.AlertStreamStub(channel).Publish(iter([pb.EnvelopeBatch()]), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "empty EnvelopeBatch" in info.value.details()
        _publish(server.url, 3)
        sub = get_transport(server.url).open_subscriber(Start.earliest())
        got = [r.envelope.alert_id for r in drain(sub, 3, timeout=10)]
        sub.close()
    assert got == [0, 1, 2]


def test_a_forged_acknowledgement_fails_the_publisher_instead_of_counting_alerts() -> None:
    """A server that acknowledges more envelopes than the batch it was sent must not make the
    publisher believe alerts it never sent were accepted."""

    def lying_publish(request_iterator: Any, context: Any) -> Any:
        for batch in request_iterator:
            yield pb.PublishAck(sequence=0, alert_id=-1, count=len(batch.envelopes) + 5)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Publish": grpc.stream_stream_rpc_method_handler(
                lying_publish,
                request_deserializer=pb.EnvelopeBatch.FromString,
                response_serializer=pb.PublishAck.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        pub = get_transport(f"grpc://127.0.0.1:{port}").open_publisher()
        pub.publish(_env(1))
        with pytest.raises(TransportError, match="acknowledged 6 envelopes"):
            pub.flush(10)
        assert pub.counters()["acknowledged"] == 0
        pub.close()
    finally:
        server.stop(0).wait()


def test_batch_bytes_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="batch_bytes"):
        AlertStreamServer(batch_bytes=0)
    with pytest.raises(ConfigError, match="batch_bytes"):
        get_transport("grpc://127.0.0.1:1?batch_bytes=0")
