"""One incremental update: its start state, ranking terms, fraud blend, gate and the
files it publishes."""
