"""Maven descriptor of the local Kafka broker (package data)."""
