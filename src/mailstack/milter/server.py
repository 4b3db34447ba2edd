"""The sender milter: Postfix asks it, at the end of each message's headers, whether the
authenticated user may send with these `From:` addresses (see mailstack.milter.sender).

One session per connection (Postfix opens one per SMTP session, and keeps it for every
message of that session). Negotiation skips every event the check does not use; MAIL stays
because its MACRO packet carries `{auth_authen}` (asked for explicitly in the OPTNEG answer,
so a changed `milter_mail_macros` cannot hide it). Only `From:` headers are kept, bounded in
number and size. At the end of headers the answer is ACCEPT (the rest of the message is
not sent to this milter), `550 5.7.1` with the reason, or `451 4.3.0` when the store cannot
be read: a message is never accepted unchecked.

Garbage, an oversized packet or an unknown command closes the connection; Postfix then
applies `milter_default_action` (tempfail in mailstack's configuration).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailstack.lookup.gateway import StoreGateway
from mailstack.lookup.resolver import Resolver
from mailstack.milter import protocol
from mailstack.milter.protocol import Packet, ProtocolError
from mailstack.milter.sender import MAX_FROM_HEADERS, MAX_FROM_LENGTH, Verdict, check_from
from mailstack.netserver import Listener
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 600.0  # between packets: Postfix waits on the SMTP client meanwhile
PACKET_TIMEOUT = 30.0  # for the rest of a packet once its length has arrived
REFUSED_STATUS = ("550", "5.7.1")
UNAVAILABLE_REPLY = protocol.reply_code(
    "451", "4.3.0", "Sender check temporarily unavailable, try again later"
)
LOGIN_MACRO = "auth_authen"
QUEUE_ID_MACRO = "i"


class CloseConnection(Exception):
    """The peer said QUIT, or sent what this session cannot follow."""


def evaluate(resolver: Resolver, login: str | None, from_values: Sequence[str]) -> Verdict:
    """The policy with the store's answers; runs where the gateway runs store calls."""
    return check_from(login, from_values, resolver.sender_logins)


#: The macros the check reads, and how much of each is kept.
USED_MACROS = frozenset({LOGIN_MACRO, QUEUE_ID_MACRO})
MAX_MACRO = 1024


@dataclass
class Session:
    """What one milter connection has seen: negotiated options, macros, From: headers."""

    options: protocol.Options | None = None
    macros: dict[bytes, dict[str, str]] = field(default_factory=dict)
    from_values: list[str] = field(default_factory=list)
    decided: bool = False

    @property
    def login(self) -> str | None:
        for stage in (protocol.MAIL, *self.macros):
            value = self.macros.get(stage, {}).get(LOGIN_MACRO)
            if value:
                return value
        return None

    @property
    def queue_id(self) -> str:
        for values in self.macros.values():
            if values.get(QUEUE_ID_MACRO):
                return values[QUEUE_ID_MACRO]
        return "-"

    def new_message(self) -> None:
        self.from_values = []
        self.decided = False

    def reset(self) -> None:
        """ABORT: the message is over; MAIL's macros belong to it."""
        self.new_message()
        for stage in (protocol.MAIL, protocol.RCPT, protocol.HEADER, protocol.END_OF_HEADERS):
            self.macros.pop(stage, None)

    def next_connection(self) -> None:
        """QUIT_NC: a new SMTP session follows on this connection, with the same options."""
        self.reset()
        self.macros.clear()

    def add_header(self, name: str, value: str) -> None:
        if name.strip().lower() != "from" or len(self.from_values) > MAX_FROM_HEADERS:
            return  # one over the limit is kept, so the policy knows there were too many
        self.from_values.append(value[: MAX_FROM_LENGTH + 1])

    def wants_reply(self, command: bytes) -> bool:
        flag = protocol.NO_REPLY_FLAG.get(command, 0)
        return self.options is None or not self.options.protocol & flag


class SenderMilter(Listener):
    """`SenderMilter(gateway)`; `await start(path=..., mode=...)` or `start(host, port)`."""

    name = "sender-milter"

    def __init__(
        self,
        gateway: StoreGateway,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        packet_timeout: float = PACKET_TIMEOUT,
        max_packet: int = protocol.DEFAULT_MAX_PACKET,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(max_connections=max_connections)
        self.gateway = gateway
        self.idle_timeout = idle_timeout
        self.packet_timeout = packet_timeout
        self.max_packet = max_packet

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session()
        while True:
            packet = await self.read_packet(reader)
            if packet is None:
                return
            try:
                reply = await self.respond(session, packet)
            except CloseConnection as exc:
                if str(exc):
                    log.warning("%s: closing connection: %s", self.name, exc)
                return
            if reply:
                writer.write(reply)
                await writer.drain()

    async def read_packet(self, reader: asyncio.StreamReader) -> Packet | None:
        """The next packet; None when the peer closed between packets or sent garbage."""
        try:
            prefix = await asyncio.wait_for(
                reader.readexactly(protocol.LENGTH_BYTES), self.idle_timeout
            )
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.warning("%s: connection closed inside a length prefix", self.name)
            return None
        try:
            length = protocol.packet_length(prefix, self.max_packet)
        except ProtocolError as exc:
            log.warning("%s: closing connection after bad framing: %s", self.name, exc)
            return None
        body = await asyncio.wait_for(reader.readexactly(length), self.packet_timeout)
        return protocol.split_packet(body)

    async def respond(self, session: Session, packet: Packet) -> bytes:
        """The bytes to send for one packet (maybe none); CloseConnection to hang up."""
        command = packet.command
        try:
            if command == protocol.OPTNEG:
                session.options = protocol.negotiate(protocol.decode_optneg(packet.data))
                return protocol.encode_optneg(session.options, protocol.WANTED_MACROS)
            if session.options is None:
                raise CloseConnection(f"command {command!r} before option negotiation")
            if command == protocol.MACRO:
                stage, macros = protocol.decode_macros(packet.data)
                # only the two values the check reads are kept, whatever Postfix (or a peer
                # pretending to be it) sends: a session's memory stays a few strings
                kept = {k: v[:MAX_MACRO] for k, v in macros.items() if k in USED_MACROS}
                if kept:
                    session.macros[stage] = kept
                return b""
            if command == protocol.HEADER:
                session.add_header(*protocol.decode_header(packet.data))
            elif command == protocol.MAIL:
                session.new_message()
            elif command in (protocol.END_OF_HEADERS, protocol.END_OF_BODY):
                if session.decided:  # only if Postfix goes on after a final answer
                    return protocol.CONTINUE
                session.decided = True
                return await self.decide(session)
            elif command == protocol.ABORT:
                session.reset()
                return b""
            elif command == protocol.QUIT:
                raise CloseConnection("")
            elif command == protocol.QUIT_NEW_CONNECTION:
                session.next_connection()
                return b""
            elif command not in protocol.NO_REPLY_FLAG:
                raise CloseConnection(f"unknown command {command!r}")
        except ProtocolError as exc:
            raise CloseConnection(f"malformed {command!r} packet: {exc}") from None
        return protocol.CONTINUE if session.wants_reply(command) else b""

    async def decide(self, session: Session) -> bytes:
        login = session.login
        try:
            verdict = await self.gateway.call(evaluate, login, tuple(session.from_values))
        except StoreUnavailable as exc:
            log.warning("%s %s: store unavailable, deferring: %s", self.name, session.queue_id, exc)
            return UNAVAILABLE_REPLY
        except Exception:  # defer the mail rather than decide without the store
            log.exception("%s %s: sender check failed", self.name, session.queue_id)
            return UNAVAILABLE_REPLY
        if verdict.accepted:
            log.debug("%s %s: accepted %s: %s", self.name, session.queue_id, login, verdict.reason)
            return protocol.ACCEPT
        log.info(
            "%s %s: refused message of %s: %s", self.name, session.queue_id, login, verdict.reason
        )
        return protocol.reply_code(*REFUSED_STATUS, verdict.reason)
