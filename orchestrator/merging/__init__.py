"""What a step's output becomes in the federation: the vote that merges node branches into
``ground-truth`` (``voting``), the announcement of each advance that data triggers watch
(``advances``), and the tool and dataset registrations (with their node branches) read for both, from
etcd or from this instance's copy while etcd is away (``registrations``).
"""
