"""Alembic environment: migrations run on a connection handed over by study.store.upgrade.

`alembic` on the command line also works (from study/, with -x url=...), for writing new
revisions with --autogenerate.
"""

from __future__ import annotations

from alembic import context

from study.store import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = make_engine(url)
    with engine.connect().execution_options(kuleshov_write=True) as conn:
        _configure_and_run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `kuleshov db upgrade`")
run()
