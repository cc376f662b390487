"""When runs start: cron schedules (``cron``: this instance's; ``federation``: federation-wide, with
``book``, their records and ticks in etcd), the clock both use (``ticks``, daylight saving), catch-up
(``catchup``, ``federation_catchup``), backfill, data triggers, the overlap policies, the request
bodies that ask for all of them (``requests``) and the coalescing that keeps a burst of ticks cheap
(``batching``). See docs/schedules.md.
"""
