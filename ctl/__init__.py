"""maoctl: the operator's command line for a MAO instance (commands, installer wizard, marketplace).

Kept light on purpose: it talks HTTP to the orchestrator and never imports the daemon's dependencies
(aiohttp, SQLAlchemy, docker, aetcd); ``executor.wire.names`` is the one shared module (stdlib only).
"""
