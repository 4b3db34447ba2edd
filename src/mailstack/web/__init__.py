"""The worker's HTTP and HTTPS listeners: ACME challenges, the MTA-STS policy and mail-client
autoconfiguration, on a Starlette app that other parts mount theirs into (see app.py).

Imported only when a web listener is configured: Starlette and uvicorn cost the worker
memory that a server without them should not pay.
"""
