"""Protobuf/gRPC stubs that protoc generates at build time (setup.py); never edited or committed."""
