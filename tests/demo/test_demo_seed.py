"""The seed generator: deterministic, linear in scale, loaded whole or not at all."""

from __future__ import annotations

import uuid

import pytest

from redline.demo import (
    BASELINE,
    DEMO_PASSWORD,
    DemoConfigError,
    DemoError,
    SchemaError,
    generate,
    scaled_counts,
    seed,
    upgrade,
    verify_password,
)
from redline.demo._seed import TABLES

SCALE = 0.02


def _database(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[1]


def _checksums(pg_server, pg_url: str) -> dict[str, str]:
    """An MD5 of every row of every seeded table, in id order."""
    sql = " UNION ALL ".join(
        f"SELECT '{table}', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) "
        f"FROM {table} t"
        for table in TABLES
    )
    out = pg_server.psql(sql, database=_database(pg_url))
    return dict(line.split("|") for line in out.splitlines())


def _counts(pg_server, pg_url: str) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{table}', count(*) FROM {table}" for table in TABLES)
    out = pg_server.psql(sql, database=_database(pg_url))
    return {table: int(count) for table, count in (line.split("|") for line in out.splitlines())}


@pytest.fixture
def second_url(pg_server):
    name = f"seed_{uuid.uuid4().hex}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


def test_the_same_scale_and_seed_load_identical_data(pg_server, pg_url, second_url):
    for url in (pg_url, second_url):
        upgrade(url, BASELINE)
        seed(url, SCALE)
    first, second = _checksums(pg_server, pg_url), _checksums(pg_server, second_url)
    assert set(first) == set(TABLES)
    assert first == second


def test_another_seed_loads_other_data(pg_server, pg_url, second_url):
    for url, number in ((pg_url, 0), (second_url, 1)):
        upgrade(url, BASELINE)
        seed(url, SCALE, seed=number)
    first, second = _checksums(pg_server, pg_url), _checksums(pg_server, second_url)
    assert first["capital_calls"] != second["capital_calls"]


def test_the_counts_returned_are_the_rows_loaded(pg_server, pg_url):
    upgrade(pg_url, BASELINE)
    counts = seed(pg_url, SCALE)
    assert _counts(pg_server, pg_url) == counts.as_dict()
    fixed = scaled_counts(SCALE)
    for table, expected in fixed.items():
        assert counts.as_dict()[table] == expected


def test_counts_grow_linearly_with_scale():
    assert scaled_counts(1) == {
        "funds": 50,
        "investors": 2_000,
        "users": 100,
        "capital_calls": 20_000,
        "workflows": 200,
        "workflow_executions": 20_000,
    }
    assert scaled_counts(3) == {table: 3 * n for table, n in scaled_counts(1).items()}
    # At any scale every table has a row.
    assert min(scaled_counts(0.0001).values()) == 1
    small, large = generate(0.05), generate(0.1)
    ratio = len(large["payments"]) / len(small["payments"])
    assert 1.6 < ratio < 2.4


@pytest.mark.parametrize("scale", [0, -1, "1", None, True])
def test_a_bad_scale_is_refused(scale):
    with pytest.raises(DemoConfigError, match="scale"):
        scaled_counts(scale)


def test_the_data_is_consistent(pg_server, pg_url):
    upgrade(pg_url, BASELINE)
    seed(pg_url, SCALE)
    database = _database(pg_url)
    # Paid calls are paid in full; no call is paid beyond its amount.
    mismatched = pg_server.psql(
        "SELECT count(*) FROM capital_calls c LEFT JOIN (SELECT capital_call_id, sum(amount) "
        "AS paid FROM payments GROUP BY 1) p ON p.capital_call_id = c.id "
        "WHERE (c.status = 'paid' AND p.paid IS DISTINCT FROM c.amount) OR p.paid > c.amount",
        database=database,
    )
    assert mismatched == "0"
    # Sequences continue after the loaded ids.
    new_id = pg_server.psql(
        "INSERT INTO funds (name, vintage_year, currency, target_size) "
        "VALUES ('New', 2026, 'USD', 1) RETURNING id",
        database=database,
    )
    assert int(new_id) == scaled_counts(SCALE)["funds"] + 1
    password_hash = pg_server.psql(
        "SELECT password_hash FROM users WHERE id = 1", database=database
    )
    assert verify_password(DEMO_PASSWORD, password_hash)
    assert not verify_password("wrong", password_hash)


def test_progress_reports_every_table_up_to_its_total(pg_url):
    upgrade(pg_url, BASELINE)
    reports: list[tuple[str, int, int]] = []
    counts = seed(pg_url, SCALE, progress=lambda *report: reports.append(report))
    last = {table: (done, total) for table, done, total in reports}
    assert list(last) == list(TABLES)
    assert last == {table: (n, n) for table, n in counts.as_dict().items()}


def test_seeding_needs_the_schema(pg_url):
    with pytest.raises(SchemaError, match=r"upgrade\(dsn\)"):
        seed(pg_url, SCALE)


def test_seeding_a_database_with_data_is_refused_unless_replacing(pg_server, pg_url):
    upgrade(pg_url, BASELINE)
    seed(pg_url, SCALE)
    before = _checksums(pg_server, pg_url)
    with pytest.raises(DemoError, match="already has rows.*replace=True"):
        seed(pg_url, SCALE, seed=1)
    assert _checksums(pg_server, pg_url) == before
    seed(pg_url, SCALE, replace=True)
    assert _checksums(pg_server, pg_url) == before


def test_seeding_fills_the_dashboard_view(pg_server, pg_url):
    upgrade(pg_url)
    seed(pg_url, SCALE)
    database = _database(pg_url)
    in_view = pg_server.psql("SELECT sum(calls) FROM dashboard_monthly", database=database)
    assert int(in_view) == scaled_counts(SCALE)["capital_calls"]


def test_progress_true_draws_a_rich_bar_per_table(pg_url, capsys):
    upgrade(pg_url, BASELINE)
    counts = seed(pg_url, SCALE, progress=True)
    out = capsys.readouterr().out
    for table in TABLES:
        assert table in out
    assert f"{counts.capital_calls}/{counts.capital_calls}" in out
