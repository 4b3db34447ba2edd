"""`/users/{address}/deliveries`: a user's recent deliveries, in and out, newest first.

Read from the delivery log the supervisor keeps (mailstack.deliverylog); an admin token may
read anyone's, a user token only its own user's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request

from mailstack.api.auth import Caller, Store, require_self
from mailstack.api.schemas import DeliveryOut
from mailstack.deliverylog.reader import MAX_EVENTS, read_deliveries
from mailstack.store import StoreUnavailable

router = APIRouter(prefix="/users/{address}/deliveries", tags=["deliveries"])


@router.get("", summary="A user's recent deliveries (to their mailbox and sent by them)")
def list_deliveries(
    address: str,
    request: Request,
    store: Store,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS, description="newest first")] = MAX_EVENTS,
) -> list[DeliveryOut]:
    canonical = require_self(caller, address)
    store.get_user(canonical)  # 404 for an unknown user
    folder: Path | None = request.app.state.delivery_log
    if folder is None:
        raise StoreUnavailable("no delivery log here (the API runs without a mail server)")
    return [DeliveryOut.model_validate(d) for d in read_deliveries(folder, canonical, limit)]
