"""Peer validation: instances compare their copies of one file and the least strange one wins.

- ``records``: the audit's keys and values in etcd (all temporary ones on the audit's lease).
- ``answering``: every instance answers each audit once with its own copies of the file.
- ``scoring``: the pure function that decides (strangeness = entries no other candidate has).
- ``service``: starting an audit, deciding it at its deadline, reading its result.
"""
