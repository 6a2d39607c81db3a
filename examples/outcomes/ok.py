def ok(name, callback):
    print("greeting", name)
    callback(None, {"greeting": "hello " + name})
