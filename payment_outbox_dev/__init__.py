"""payment-outbox developer tooling: the system on one machine, without AWS.

Template-driven provisioning into an AWS emulator (moto), an in-process handler harness, the
local stack, the demos, fault injection, the chaos run and the ``payment-outbox`` command. It
imports the runtime package (``payment_outbox``) freely; the runtime never imports it, and the
Lambda layer does not ship it.
"""
