"""Adapters: the outside world (MySQL, SNS, DynamoDB, Secrets Manager) behind the ports."""
