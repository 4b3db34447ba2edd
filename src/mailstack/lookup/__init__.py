"""The lookup service: Postfix socketmap and Dovecot dict answers from the store."""

from mailstack.lookup.service import Endpoint, LookupService

__all__ = ["Endpoint", "LookupService"]
