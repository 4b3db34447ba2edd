"""The worker: every Python network service of a profile, in one process without root.

`python -m mailstack.worker` is started by the supervisor like a daemon. It reads its TLS keys
while still root, becomes its own system user (`privileges.py`), then starts every service on
one event loop with one datastore engine (`services.py`). Its sockets live in folders the
supervisor gives to that user, on ports that need no privilege.
"""
