"""The gateway: external tools write raw entries in and read insights out, confined to two namespaces.

- ``namespace``: what a gateway key may name, and the only etcd keys it can map to.
- ``limits``: the documented bounds (key length, value size, writes per key and second).
- ``tokens``: gateway API keys (instance-local, stored hashed) and who a request comes from.
- ``raw``: ``/write``, ``/read`` and ``/inspect`` on etcd, raw entries bound to short leases.
- ``listener``: each instance keeps the raw entries it acknowledged in a dataset, exactly once.
- ``insights``: a step's ``insights.json`` published under ``insights/<tool>``.
"""
