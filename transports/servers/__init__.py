"""Servers that transports talk to but that are not ours to write: Apache Kafka (started from
Maven Central jars), Comet (a VTP peer), and the schema registry."""
