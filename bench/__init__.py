"""webhookd benchmarks: ingest throughput, backlog delivery and end-to-end latency, each against a raw
baseline measured in the same run with the same load generator. Run with ``python -m bench``."""
