"""The demos: the whole flow embedded in one process, or narrated over the live local stack."""
