"""create(user, callback): sign a new user up through the legacy API.

POST {API_URL}users {"email", "password", "nickname", "username"}: 201, or 409
when the email (or username) is taken. The API hashes the password; it is
never logged here. Success: callback(None). Taken:
callback(ValidationError("user_exists", ...)).
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


def create(user, callback):
    body = {
        "email": user["email"],
        "password": user["password"],
        "nickname": user.get("nickname") or user["email"].split("@")[0],
        "username": user.get("username"),
    }
    try:
        call_api("POST", "users", body)
    except http.HttpError as error:
        if error.status == 409 and "user_exists" in error.body:
            callback(ValidationError("user_exists", "A user with this email already exists."))
        else:
            callback(error)
        return
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None)
