"""payment-outbox benchmarks: ``python -m bench`` (or ``make bench``) measures the system against its
baselines in one run and writes docs/benchmarks.md and docs/benchmarks.json."""
