"""The admin REST API (`/api/v1`): FastAPI over the datastore's service layer.

Importing this package pulls in FastAPI, pydantic and SQLAlchemy: only the worker's web
listener and the tests should.
"""

from mailstack.api.app import MOUNT_PATH, create_api

__all__ = ["MOUNT_PATH", "create_api"]
