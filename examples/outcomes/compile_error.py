def compile_error(callback):
    callback(None, callback.__self__)
