"""Alembic's entry point: migrates the connection the store hands over.

The store runs migrations itself when it opens (``diego.state.store``), passing
its connection in ``config.attributes["connection"]``; there is no alembic.ini.
"""

from alembic import context

from diego.state.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them; batch mode does that for us.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
