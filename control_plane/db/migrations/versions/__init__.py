"""One module per schema revision, oldest first: ``0001_registry``, ``0002_auth_audit``, ..."""
