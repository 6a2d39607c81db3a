"""get_user(email, callback): look a user up without a password.

GET {API_URL}users?email=...: 200 with the user, 404 when nobody has it.
Found: callback(None, profile) with the same user_id as login returns.
Not found: callback(None). Any other failure: callback(error).
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


def profile(user):
    return {
        "user_id": str(user["id"]),
        "email": user["email"],
        "nickname": user["nickname"],
        "email_verified": bool(user["email_verified"]),
    }


def get_user(email, callback):
    try:
        user = call_api("GET", "users", params={"email": email})["json"]
    except http.HttpError as error:
        if error.status == 404 and "user_not_found" in error.body:
            callback(None)
        else:
            callback(error)
        return
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None, profile(user))
