"""The HTTP contracts of the two APIs: request models, views, and the error-to-status table."""
