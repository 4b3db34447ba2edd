"""ManageSieve (RFC 5804) for mailstack: users upload and activate their Sieve scripts.

Dovecot 2.3's own ManageSieve cannot write to dict storage, from which Pigeonhole reads
mailstack's active script, so mailstack serves the protocol itself and every change goes
through `MailStore`, checked by Pigeonhole's compiler first.
"""

from mailstack.managesieve.server import ManageSieveServer
from mailstack.managesieve.session import Checker

__all__ = ["Checker", "ManageSieveServer"]
