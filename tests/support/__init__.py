"""Helpers the tests (and the latency benchmark, run from a checkout) share."""
