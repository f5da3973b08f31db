"""Use cases: each takes its ports (and a unit of work where it touches the database)."""
