"""Small HTTP steps the end-to-end tests share."""

import uuid

PASSWORD = "correct horse battery staple"


def register(api, email=None, password=PASSWORD):
    email = email or f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    response = api.post(
        "/v1/auth/register", json={"email": email, "password": password, "full_name": "E2E User"}
    )
    assert response.status_code == 201, response.text
    return response.json() | {"password": password}


def login(api, user):
    response = api.post(
        "/v1/auth/login", json={"email": user["email"], "password": user["password"]}
    )
    assert response.status_code == 200, response.text
    return response.json()


def signed_up(api):
    """A registered, logged-in user: (user, tokens)."""
    user = register(api)
    return user, login(api, user)


def assert_problem(response, status, code=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "code", "correlation_id"} <= set(body)
    assert body["status"] == status
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    if code:
        assert body["code"] == code, body
    return body
