"""ACME (RFC 8555) certificates for the server's names, obtained and renewed by the worker.

- files.py: the layout on the state volume (account key, challenge answers, certificates)
  and the atomic switch to a new certificate;
- certs.py: what a certificate says, and when it is due for renewal;
- client.py: one order with certbot's `acme` library (blocking; run in a thread);
- answers.py: the challenge answered, HTTP-01 (a file the HTTP listener serves) or DNS-01
  (a TXT record by a provider, dns01.py; RFC 2136 dynamic update with TSIG, rfc2136.py);
- renewer.py: the worker's service that checks, orders, retries with back-off, and keeps the
  old certificate when anything fails.
"""
