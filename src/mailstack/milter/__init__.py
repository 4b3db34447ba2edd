"""Postfix milters served by the worker: the sender check on submission (`SenderMilter`)."""

from mailstack.milter.server import SenderMilter

__all__ = ["SenderMilter"]
