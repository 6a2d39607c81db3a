def counter(spin, callback):
    # global_ lives as long as the worker: reset after a timeout or crash.
    global_["calls"] = global_.get("calls", 0) + 1
    while spin:
        pass
    callback(None, global_["calls"])
