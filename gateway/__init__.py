"""The HTTP gateway: Flask in front of the Nameko services."""
