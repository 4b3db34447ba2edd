"""Administering the server profile from the command line: domains, users, aliases, sieve
scripts and DKIM records. Every change goes through the store's service layer."""

from mailstack.admin.cli import register

__all__ = ["register"]
