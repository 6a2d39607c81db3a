"""change_email(email, new_email, verified, callback): move a user to a new email.

POST {API_URL}users/email {"email", "new_email", "verified"} -> {"changed":
bool}, or 409 when the new address is taken: callback(ValidationError(
"user_exists", ...)). callback(None, False) when no user has ``email``.
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


def change_email(email, new_email, verified, callback):
    body = {"email": email, "new_email": new_email, "verified": bool(verified)}
    try:
        answer = call_api("POST", "users/email", body)
    except http.HttpError as error:
        if error.status == 409 and "user_exists" in error.body:
            callback(ValidationError("user_exists", "Another user already has this email."))
        else:
            callback(error)
        return
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None, bool(answer["json"]["changed"]))
