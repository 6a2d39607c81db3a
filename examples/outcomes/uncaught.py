def helper(x):
    return 1 / x


def uncaught(callback):
    callback(None, helper(0))
