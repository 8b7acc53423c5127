"""Generated protobuf and gRPC stubs of protos/otel_lightning/v1 (scripts/generate_protos.py)."""
