"""auth: identities, passwords, sessions, tokens and MFA."""
