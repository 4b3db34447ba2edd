"""Per-user spam training: rspamd's controller client, the learning spool Dovecot fills when
a user moves mail in or out of Junk, the worker's learner, and the nightly training pass."""
