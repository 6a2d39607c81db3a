def script_error(email, callback):
    callback(WrongUsernameOrPasswordError(email, "wrong email or password"))
