"""The lookup service: Postfix socketmap and Dovecot dict answers from the store.

`mailstack.lookup.service` has the service; its wire formats (`netstring`, `socketmap`,
`dictproto`) import no datastore code, so the relay's MTA-STS map can share them without
loading SQLAlchemy.
"""
