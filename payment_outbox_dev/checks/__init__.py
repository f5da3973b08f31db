"""Offline checks of template.yaml: the one loader, the proofs over every parameter combination, preflight."""
