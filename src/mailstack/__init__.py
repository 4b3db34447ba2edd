"""mailstack: Python decides, Postfix/OpenDKIM/Dovecot/rspamd do the mail work."""

__version__ = "0.1.0"
