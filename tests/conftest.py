import pathlib
import sys

# test modules share small helpers by importing each other (e.g. test_runner)
sys.path.insert(0, str(pathlib.Path(__file__).parent))


# -- state stores: the JSON file and a real PostgreSQL server ---------------------------------
import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

#: An existing server to use instead of starting one (CI service containers); tests then
#: work in throwaway schemas of its database.  Needs a user that may create schemas.
PG_DSN_VARIABLE = "SEEKNAL_TEST_PG_DSN"


@pytest.fixture(scope="session")
def pg_dsn():
    """DSN of a PostgreSQL server for this test session (one per xdist worker).

    Started by tests/pg_server.py (installing Debian's postgresql package when missing),
    stopped at the end of the session.  Any problem fails the tests that need it: they
    must run for real in `make test` and CI, never be skipped.
    """
    external = os.environ.get(PG_DSN_VARIABLE, "").strip()
    if external:
        yield external
        return
    import pg_server

    server = pg_server.start_server()
    try:
        yield server.dsn
    finally:
        server.stop()


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema(pg_dsn):
    """A fresh schema name on the test server, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(pg_dsn, schema)


@pytest.fixture(params=["json", "postgres"])
def store_factory(request, tmp_path):
    """``make()`` opens another store on the same state: a JSON file or a PostgreSQL schema.

    Tests using it run once per backend; every store made is closed at the end.
    """
    from seeknal_core.state import JsonStateStore, PostgresStateStore

    made = []
    if request.param == "json":
        path = tmp_path / "target" / "run_state.json"

        def open_one():
            return JsonStateStore(path, durable=False)
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")

        def open_one():
            return PostgresStateStore(dsn, schema=schema)

    def make():
        made.append(open_one())
        return made[-1]

    make.backend = request.param
    yield make
    for store in made:
        store.close()
