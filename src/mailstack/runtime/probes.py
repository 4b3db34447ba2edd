"""Readiness probes: is the daemon really serving, not just running?"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mailstack.settings.values import HostPort, parse_listen


async def smtp_ready(address: HostPort, helo: str = "localhost", timeout: float = 5.0) -> bool:
    """True when the listener greets with 220 and answers EHLO with 250."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address.connect_host, address.port)
            if not (await _reply(reader)).startswith("220"):
                return False
            writer.write(f"EHLO {helo}\r\n".encode())
            await writer.drain()
            ok = (await _reply(reader)).startswith("250")
            writer.write(b"QUIT\r\n")
            await writer.drain()
            return ok
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _reply(reader: asyncio.StreamReader) -> str:
    """Read a (possibly multi-line) SMTP reply; return its last line."""
    while True:
        line = (await reader.readline()).decode("ascii", errors="replace")
        if not line:
            return ""
        if len(line) < 4 or line[3] != "-":
            return line


def unix_socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def is_socket(path: Path) -> bool:
    """A stat, no connection (fast: no thread hop)."""
    return path.is_socket()


async def unix_ready(path: Path) -> bool:
    return await asyncio.to_thread(unix_socket_accepts, path)


async def tcp_ready(address: HostPort, timeout: float = 2.0) -> bool:
    """True when something accepts a TCP connection on `address`."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address.connect_host, address.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def probe_passes(kind: str, target: str) -> bool:
    """One probe of a plan (`runtime.plan.Probe`): kind unix, socket-file, tcp or smtp."""
    if kind == "unix":
        return await unix_ready(Path(target))
    if kind == "socket-file":
        return is_socket(Path(target))
    address = parse_listen(target)
    if kind == "tcp":
        return await tcp_ready(address)
    return await smtp_ready(address)
