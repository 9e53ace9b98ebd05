"""Long lists bound as one JSON text (core/long_lists.py): whatever they hold comes back from
ClickHouse as it went in, and nothing in them is read as SQL."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.core.long_lists import LONG_LIST_SETTINGS, long_list, long_list_parameter

# Texts that would end or escape a literal: heredoc tags (among them this list's own), quotes,
# backslashes, zero bytes, line breaks, a closing parenthesis and a comment.
HOSTILE = [
    "$items$",
    "$items$) OR 1 = 1 --",
    "$$",
    "$",
    "a$b$c",
    "'",
    "\\",
    '"',
    "\\u0024",
    "\x00",
    "line\nbreak\r\t",
    "ünïcødé 𝄞",
    "",
    "}{items:String}",
]


def echoed(clickhouse: Client, values: list[str]) -> list[str]:
    sql = f"SELECT {long_list('items', 'String')}"
    parameters = long_list_parameter("items", values)
    result = clickhouse.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS)
    return list(result.result_rows[0][0])


def test_hostile_strings_come_back_as_they_went_in(clickhouse: Client) -> None:
    assert echoed(clickhouse, HOSTILE) == HOSTILE


# The fixture's client holds no state a query changes.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text(), max_size=20))
def test_any_strings_come_back_as_they_went_in(clickhouse: Client, values: list[str]) -> None:
    assert echoed(clickhouse, values) == values


def test_a_list_longer_than_the_default_query_size_and_integers(clickhouse: Client) -> None:
    names = [f"visitor-{n:08d}-{'x' * 20}" for n in range(20_000)]  # ~680 KB of JSON
    times = [-(2**62), 0, 2**62, *range(10_000)]
    sql = f"""
        SELECT length({long_list("names", "String")}), {long_list("names", "String")}[20000],
            {long_list("times", "Int64")}
    """
    parameters = {**long_list_parameter("names", names), **long_list_parameter("times", times)}
    result = clickhouse.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS)
    count, last, echoed_times = result.result_rows[0]
    assert (count, last, list(echoed_times)) == (20_000, names[-1], times)


def test_a_name_must_be_a_plain_word() -> None:
    for name in ("a$", "a b", "", "x'"):
        with pytest.raises(ValueError, match="letters, digits"):
            long_list(name, "String")
