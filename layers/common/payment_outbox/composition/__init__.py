"""The composition root: which settings, adapters and use cases each function is made of.

One module per function family, each with explicit ``build_*`` factories that read the function's
settings and wire its parts; nothing is built at import time and nothing is cached here. A handler
builds its parts on first use and keeps them for its container's life (``functools.cache``), so a
test gets a fresh build by loading the handler again, or by calling a factory itself.

The families import only what they use, which keeps cold starts short: the consumers never import
SQLAlchemy (``consumers``), and the payment API never imports the idempotency layer (``payment_api``).
"""
