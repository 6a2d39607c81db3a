def double_callback(callback):
    callback(None, "first")
    callback(None, "second")
