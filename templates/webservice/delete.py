"""delete(user_id, callback): remove a user by the user_id login returned.

DELETE {API_URL}users/<id> -> {"deleted": bool}. callback(None) whether or
not the user existed (deleting twice is fine); callback(error) on failure.
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


def delete(user_id, callback):
    try:
        call_api("DELETE", "users/" + str(int(user_id)))
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None)
