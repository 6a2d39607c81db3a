def invalid_result(callback):
    callback(None, {1, 2, 3})  # a set is not JSON
