"""change_password(email, new_password, callback): set a new password.

POST {API_URL}users/password {"email", "password"} -> {"changed": bool}; the
API stores a new bcrypt hash. callback(None, True) when it changed,
callback(None, False) when no user has that email.
"""
import http


def call_api(method, path, body=None, params=None):
    """One request to the legacy API (base URL and key from configuration).

    Returns the answer as a dict ({"status", "json", ...}); a 4xx/5xx answer
    raises http.HttpError (with .status), a slow API http.HttpTimeout.
    """
    return http.request(
        method,
        configuration["API_URL"] + path,
        json=body,
        params=params,
        headers={"Authorization": "Bearer " + configuration["API_KEY"]},
    )


def change_password(email, new_password, callback):
    try:
        answer = call_api("POST", "users/password", {"email": email, "password": new_password})
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None, bool(answer["json"]["changed"]))
