"""Sieve scripts: checking them with Pigeonhole's own compiler before they are stored.

Dovecot compiles the active script at delivery time; a script that does not compile there
silently falls back to keeping every message. Checking with the same compiler when a script
is uploaded turns that silent failure into an error the user sees at once.
"""

from mailstack.sieve.check import (
    MAX_SCRIPT_BYTES,
    SIEVE_EXTENSIONS,
    SieveCheckUnavailable,
    check_script,
)

__all__ = ["MAX_SCRIPT_BYTES", "SIEVE_EXTENSIONS", "SieveCheckUnavailable", "check_script"]
