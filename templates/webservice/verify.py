"""verify(email, callback): mark a user's email as verified.

POST {API_URL}users/verify {"email"} -> {"changed": bool}. callback(None, True)
when the user was marked, callback(None, False) when no user has that email.
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


def verify(email, callback):
    try:
        answer = call_api("POST", "users/verify", {"email": email})
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None, bool(answer["json"]["changed"]))
