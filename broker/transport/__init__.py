"""Transport and authentication: mutual TLS credentials, the caller's identity on every call."""
