"""Request and response bodies. Types only: the datastore validates and normalises values
(addresses, names, quotas, passwords) and names the field when it refuses one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Out(BaseModel):
    """Built from the datastore's dataclasses: `DomainOut.model_validate(info)`."""

    model_config = ConfigDict(from_attributes=True)


class Body(BaseModel):
    """Unknown fields are refused: a misspelt `activte` must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class DomainIn(Body):
    name: str = Field(examples=["example.com"])


class DomainOut(Out):
    name: str
    users: int
    aliases: int
    alias_domains: list[str]
    created_at: datetime


class DkimRecordOut(BaseModel):
    """The TXT record to publish, derived from the private key OpenDKIM signs with."""

    domain: str
    selector: str
    name: str = Field(examples=["mail._domainkey.example.com"])
    type: Literal["TXT"] = "TXT"
    value: str = Field(examples=["v=DKIM1; h=sha256; k=rsa; s=email; p=MIIBIjANBg…"])


def _size(value: object) -> object:
    """Only a number, a text or null; a boolean is not a size (pydantic would take it as 1),
    and refusing here names the field plainly (a union would name each of its branches)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
        raise ValueError("must be a number of bytes, a size such as 500M or 2G, or null")
    return value


Quota = Annotated[int | str | None, BeforeValidator(_size)]


class UserIn(Body):
    address: str = Field(examples=["alice@example.com"])
    password: str = Field(min_length=1, json_schema_extra={"writeOnly": True})
    quota: Quota = Field(
        default=None,
        description="Bytes, or a size such as 500M or 2G; null or 0 is unlimited.",
        examples=["2G"],
    )


class UserOut(Out):
    address: str
    quota_bytes: int | None = Field(description="null: unlimited")
    enabled: bool
    admin: bool = Field(description="may use the web UI's admin pages")
    created_at: datetime
    domain: str


class UserSettingsIn(Body):
    """What an admin may set on a user with PUT: every field given."""

    admin: bool = Field(description="May use the web UI's admin pages.")
    enabled: bool = Field(description="false: no login anywhere; mail is still accepted.")
    quota: Quota = Field(description="Bytes, or a size such as 500M or 2G; null or 0 is unlimited.")


class UserChangeIn(Body):
    """What an admin may change on a user with PATCH: only the fields given."""

    admin: bool | None = Field(default=None, description="May use the web UI's admin pages.")
    enabled: bool | None = Field(
        default=None, description="false: no login anywhere; mail is still accepted."
    )
    quota: Quota = Field(
        default=None, description="Bytes, or a size such as 500M or 2G; null or 0 is unlimited."
    )


class PasswordIn(Body):
    password: str = Field(min_length=1, json_schema_extra={"writeOnly": True})


class SpamSettingsIn(Body):
    threshold: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="rspamd score (a whole number) from which this user's mail goes to Junk; "
        "null: the server's MAILSTACK_SPAM_JUNK_SCORE.",
    )
    filter: bool = Field(
        default=True, description="false: spam is delivered to the Inbox (nothing to Junk)."
    )


class SpamSettingsOut(Out):
    address: str
    threshold: int | None
    filter: bool


class QueuedRecipientOut(BaseModel):
    address: str
    delay_reason: str | None = Field(
        default=None, description="Why delivery failed so far, in Postfix's words."
    )


class QueuedMessageOut(BaseModel):
    """One message in Postfix's queue (as `postqueue -j` lists it)."""

    queue_id: str
    queue_name: str = Field(description="active, deferred, hold, incoming or maildrop")
    arrival_time: datetime
    message_size: int
    sender: str
    recipients: list[QueuedRecipientOut]


class AliasIn(Body):
    source: str = Field(
        description="An address in a hosted domain, or @domain for a catch-all (admins only).",
        examples=["info@example.com"],
    )
    targets: list[str] = Field(
        description="Addresses to deliver to; a user token may give only its own address.",
        examples=[["alice@example.com"]],
    )


class AliasOut(Out):
    source: str
    targets: list[str]
    catch_all: bool = Field(description="the source is @domain")
    domain: str


class ScriptIn(Body):
    content: str = Field(description="The Sieve script (UTF-8); it must compile (sievec).")
    activate: bool = Field(default=False, description="Also make it the active script.")


class ScriptOut(Out):
    name: str
    active: bool
    size: int = Field(description="bytes")
    version: int = Field(description="grows with every change of the script or its activation")
    updated_at: datetime


class ScriptWithContent(ScriptOut):
    content: str


class CallerOut(BaseModel):
    """The token a request was made with."""

    token: str = Field(description="the token's name")
    user: str | None = Field(description="the user it acts for; null for an admin token")
    admin: bool


class DeliveryOut(Out):
    """One delivery attempt to one recipient (a message to three people is three)."""

    time: datetime
    direction: Literal["in", "out"] = Field(
        description="in: mail for this user; out: mail the user sent after logging in"
    )
    queue_id: str = Field(description="Postfix's queue id; empty for mail refused at once")
    sender: str = Field(description="the envelope sender; empty for bounces")
    recipient: str
    original_recipient: str | None = Field(description="the alias the mail was sent to")
    status: Literal["sent", "deferred", "bounced", "rejected"] = Field(
        description="sent: accepted by the next hop (or delivered here); deferred: will be "
        "retried; bounced: given up, the sender was told; rejected: refused during SMTP"
    )
    mailbox: str | None = Field(description="the folder it was filed into, when delivered here")
    relay: str | None = Field(description="the next hop")
    reply: str = Field(description="what the next hop answered, or why it was not reached")
