"""The DNS records a hosted domain needs: building them (`records`, pure) and comparing them
with what is published (`check`, the only module that talks to a resolver)."""
