"""payment-outbox: reliable side effects for paid orders (transactional outbox on AWS serverless)."""

__version__ = "0.1.0"
