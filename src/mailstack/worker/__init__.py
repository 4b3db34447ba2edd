"""The worker: every Python network service of a profile, in one process without root.

`python -m mailstack.worker` is started by the supervisor like a daemon. It binds every
listener while it is still root, then becomes its own system user (`privileges.py`), and runs
them all on one event loop with one datastore engine (`services.py`).
"""
