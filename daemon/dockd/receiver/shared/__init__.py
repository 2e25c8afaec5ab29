"""Upload state shared by several receiver nodes, in PostgreSQL (issue 16; docs/SCALE.md).

* `connection.py`: the bounded psycopg 3 pool, and the one place where a PostgreSQL failure
  becomes `StoreUnavailable` (503 + Retry-After) within a bound instead of a hang.
* `schema.py`: the tables and their numbered migrations (`migrate()` is idempotent).
* `state.py`: `PgStateBackend`, one row per unfinished upload; every write is a single statement
  conditioned on the writer's fencing token, so a node that lost its lock changes nothing.
* `locker.py`: `PgLocker`, the per-upload lease with a fencing token that grows on every
  acquisition, renewed by one thread per node; a waiting node asks the holder to let go
  through LISTEN/NOTIFY.

Why psycopg 3 in its synchronous form and not asyncpg: the store interface (storage/api.py)
blocks and runs on worker threads, as the file store's fsyncs do; a sync driver fits it without
a second event loop per thread, psycopg_pool gives the bounded pool, and LISTEN/NOTIFY works on
a plain connection. asyncpg would only run on the receiver's event loop, so every store call
would have to hop back onto the loop from its worker thread.
"""
