"""Postfix policy services of the worker: greylisting on port 25 (`GreylistPolicy`).

Greylisting follows postgrey (see mailstack.policy.greylist for the rules); its state is in
the datastore, so every Postfix instance and worker replica on one database shares it.

    policy = GreylistPolicy(
        engine,                       # the worker's datastore engine (SQLite or PostgreSQL)
        GreylistConfig(               # postgrey's defaults; seconds
            delay=300, retry_window=2 * 86400, max_age=35 * 86400,
            auto_allow_after=5,       # 0: never auto-allow a client network
            allow_networks=("192.0.2.0/24",), allow_domains=("example.net",),
            allow_recipients=("postmaster@", "abuse@"),
        ),
        timeout=3.0,                  # per decision; past it (or on a store error): DUNNO
    )
    await policy.start(path="/run/.../greylist.sock", mode=0o666)
    ...
    await policy.stop()

Postfix, on port 25 only (submission sets its own recipient restrictions), after the
relay check, so greylisting never replaces it:

    smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unlisted_recipient,
        permit_mynetworks,
        check_policy_service { unix:/run/.../greylist.sock, default_action=DUNNO }

`default_action=DUNNO` lets mail through when the worker is not there at all (Postfix's
default would be `451 4.3.5`). Administrators' allow entries live in the datastore table
`greylist_allow`; see `mailstack.policy.state` (add_allow_entry, remove_allow_entry,
list_allow_entries).
"""

from mailstack.policy.greylist import GreylistConfig
from mailstack.policy.server import GreylistPolicy

__all__ = ["GreylistConfig", "GreylistPolicy"]
