"""MAO executor: a small HTTP service that runs one tool container per request.

It holds the Docker socket, so it is root-equivalent on its host: it listens on a Unix socket only its
user (the orchestrator's) can reach by default, and answers nothing without its shared secret.
"""
