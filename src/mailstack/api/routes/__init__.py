"""One router per resource; `mailstack.api.app` mounts them all."""
