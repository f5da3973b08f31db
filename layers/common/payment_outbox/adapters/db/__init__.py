"""SQLAlchemy adapters for MySQL/MariaDB (SQLite for the embedded demo only)."""
