"""login(email, password, callback): check a password with the legacy API.

POST {API_URL}login {"email", "password"}: 200 with the user, 401 for a wrong
password, 404 for an unknown email. Success: callback(None, profile). Unknown
email or wrong password: callback(WrongUsernameOrPasswordError(...)), with the
email when the user exists. Any other failure (API down, timeout, 5xx, a
rejected API key): callback(error).
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


def login(email, password, callback):
    try:
        user = call_api("POST", "login", {"email": email, "password": password})["json"]
    except http.HttpError as error:
        if error.status == 404 and "user_not_found" in error.body:
            callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        elif error.status == 401 and "wrong_password" in error.body:
            callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        else:
            callback(error)
        return
    except http.HttpFailure as error:
        callback(error)
        return
    callback(None, profile(user))
