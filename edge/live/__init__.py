"""The camera loop: its pipelined stages, the tracker, and the runtime state the API reads."""
