"""The platform's Nameko services, one package each."""
