"""notifications: email, SMS and push messages about what happens to a customer."""
