def timeout(callback):
    while True:
        pass
