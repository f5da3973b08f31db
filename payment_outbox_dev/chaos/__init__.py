"""Chaos, kill and load runs over the real handlers and the local stack."""
