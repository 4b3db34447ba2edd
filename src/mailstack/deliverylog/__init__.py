"""Each user's recent deliveries, from the daemons' own log lines.

The supervisor already reads every Postfix and Dovecot line; `journal.DeliveryJournal`
picks out the few that end a delivery (one per recipient and attempt), completes them with
what earlier lines of the same message said (sender, login), and appends them as JSON lines
to a file of bounded size on the state volume. The worker (`reader.read_deliveries`) reads
that file when a user asks and keeps the lines that are theirs. So the supervisor does no
lookups and keeps no per-user state, and nothing is counted twice or sent between processes.

The files live in their own folder (root:mailstack 2750): written by root only, readable by
the worker, and by nobody else, since they name who wrote to whom.
"""

#: The file the supervisor appends to, and the previous one, kept after a rotation.
CURRENT = "deliveries.jsonl"
PREVIOUS = "deliveries.1.jsonl"
#: Bytes after which the current file becomes the previous one (two are kept): about
#: 12,000 deliveries each, several weeks of a small server's mail.
ROTATE_BYTES = 4 * 1024 * 1024
