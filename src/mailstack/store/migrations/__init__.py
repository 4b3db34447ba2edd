"""Alembic migrations of the datastore, applied by `mailstack.store.engine.migrate`."""
