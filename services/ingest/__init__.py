"""Streaming ingestion: Kafka listing events -> image -> embedding -> Milvus + Feast."""
