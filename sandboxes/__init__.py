"""Stand-ins for the outside providers, for development and tests only.

    python -m sandboxes.payments        card charges and payouts (HTTP)
    python -m sandboxes.notifications   email (SMTP), SMS and push (HTTP)

Real servers that `make run`, the tests and the dev deployments talk to
instead of a real provider. Not part of the production image nor of the
installed package: the Dockerfile copies them only into its `sandbox` target.
"""
