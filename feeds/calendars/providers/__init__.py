"""Calendar providers reached through their own REST APIs and OAuth (Google; Microsoft next):
the provider-neutral interface in base.py, one module per provider."""
