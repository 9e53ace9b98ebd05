"""Which SQL the query endpoint lets through, decided on ClickHouse's own parse of it.

ClickHouse parses the text twice for us and nothing runs in between: `formatQuerySingleLine`
(the SQL travels as a bound parameter, so a second statement after `;` is a syntax error and never
executes — the embedded engine would otherwise run every statement of a multi-statement text) gives
one canonical statement, and `EXPLAIN AST` of that statement gives its tree. The tree is checked
here against an allow-list: one SELECT (WITH, UNION, subqueries, JOINs), tables of the project's
own database only, a few generating table functions, no dictionary/file/join-engine functions, no
SETTINGS, FORMAT or INTO OUTFILE clause. The canonical text is what then runs, so the statement
that was checked is the statement that executes. ClickHouse's readonly mode, its limits and (on a
server) the project's role enforce the same boundary again; this check is defence in depth and
the only per-project boundary the embedded engine has (see docs/query-api.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headwater.core.projects.project import DATABASE_PREFIX

# Statement kinds (root nodes of EXPLAIN AST) a query may be.
_SELECT_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery")

# Nodes named *Query that belong to a SELECT; any other *Query node is another statement.
_SELECT_PARTS = frozenset({*_SELECT_ROOTS, "SelectQuery", "TablesInSelectQuery"})

# Table functions that generate rows and reach nothing else.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "values", "view"}
)

# Ordinary functions that read outside the query's tables: dictionaries and Join tables by name,
# files of the server, other tables' metadata, server settings.
_DENIED_FUNCTION = re.compile(
    r"^(dict\w*|joinGet\w*|hasColumnInTable|file|getSetting\w*|getServerSetting\w*|getMacro"
    r"|filesystem\w*|catboostEvaluate|modelEvaluate|currentProfiles|enabledProfiles|defaultProfiles"
    r"|currentRoles|enabledRoles|defaultRoles|getClientHTTPHeader|displayName|hostName|fqdn"
    r"|serverUUID|getOSKernelVersion|zookeeperSessionUptime|shardNum|shardCount)$",
    re.IGNORECASE,
)

# Databases a qualified name may never point at (besides another project's `hw_*`).
_FOREIGN_DATABASES = frozenset({"system", "information_schema", "default", "_temporary_and_external_tables"})

_LINE = re.compile(r"^(?P<indent> *)(?P<kind>\w+)(?: (?P<rest>.*))?$")
_NAME = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?: \(alias [A-Za-z0-9_]+\))?$"
)
_CHILDREN = re.compile(r" \(children \d+\)$")


class QueryNotAllowed(Exception):
    """The statement reaches outside what a project's query may touch; the message names what."""


@dataclass(frozen=True, slots=True)
class _Node:
    depth: int
    kind: str
    rest: str  # what follows the kind, without the "(children N)" suffix


def _nodes(tree: str) -> list[_Node]:
    nodes = []
    for line in tree.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise QueryNotAllowed(f"the query has a part headwater cannot check: {line.strip()[:80]!r}")
        rest = _CHILDREN.sub("", match["rest"] or "")
        nodes.append(_Node(len(match["indent"]), match["kind"], rest))
    return nodes


def _name(node: _Node) -> str:
    match = _NAME.match(node.rest)
    if match is None:
        raise QueryNotAllowed(
            f"the name {node.rest[:80]!r} is not allowed: use plain names of letters, digits and _"
        )
    return match["name"]


def _function_name(node: _Node) -> str:
    return node.rest.split(" ", 1)[0]


def _check_database(database: str, own: str) -> None:
    if database == own:
        return
    if database.lower() in _FOREIGN_DATABASES or database.startswith(DATABASE_PREFIX):
        raise QueryNotAllowed(
            f"database {database!r} is outside this project: a query reads its own database {own!r} only"
        )


EXPLAIN_FORMAT = "TabSeparatedRaw"


def explain_statement(canonical: str) -> str:
    """EXPLAIN AST of one canonical statement, with the FORMAT written out: a FORMAT clause of the
    statement itself then makes it a syntax error, and the tree ends with this one."""
    return f"EXPLAIN AST {canonical} FORMAT {EXPLAIN_FORMAT}"


def check_tree(tree: str, own_database: str) -> None:
    """Raise QueryNotAllowed unless `tree` (the output of explain_statement) is a SELECT confined
    to `own_database`."""
    nodes = _nodes(tree)
    if not nodes or nodes[0].kind not in _SELECT_ROOTS:
        kind = nodes[0].kind if nodes else "an empty statement"
        shown = "KILL" if kind.startswith("Kill") else kind
        raise QueryNotAllowed(f"only SELECT queries are allowed, not {shown} ({kind})")
    root_depth = nodes[0].depth
    if nodes[-1] != _Node(root_depth + 1, "Identifier", EXPLAIN_FORMAT):
        raise QueryNotAllowed("FORMAT clauses are not allowed: the API chooses the format")
    nodes = nodes[:-1]
    if sum(1 for n in nodes if n.depth == root_depth + 1) > 1:
        raise QueryNotAllowed("FORMAT and INTO OUTFILE clauses are not allowed: the API chooses the format")
    parents: list[_Node] = []
    for node in nodes:
        del parents[node.depth - root_depth :]
        parent = parents[-1] if parents else None
        parents.append(node)
        if node.kind in ("Set", "SetQuery"):
            raise QueryNotAllowed("SETTINGS clauses are not allowed: headwater sets the query limits")
        if node.kind == "TableIdentifier":
            database, dot, _ = _name(node).rpartition(".")
            if dot and database != own_database:
                raise QueryNotAllowed(
                    f"database {database!r} is outside this project: "
                    f"a query reads its own database {own_database!r} only"
                )
        elif node.kind == "Identifier":
            parts = _name(node).split(".")
            if len(parts) > 1:  # `x IN db.table`, or a column qualified by a table alias
                _check_database(parts[0], own_database)
        elif node.kind == "Function":
            name = _function_name(node)
            if parent is not None and parent.kind == "TableExpression":
                if name not in ALLOWED_TABLE_FUNCTIONS:
                    allowed = ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS))
                    raise QueryNotAllowed(f"table function {name}() is not allowed (allowed: {allowed})")
            elif _DENIED_FUNCTION.match(name):
                raise QueryNotAllowed(
                    f"function {name}() is not allowed: it reads outside the project's tables"
                )
        elif node.kind.endswith("Query") and node.kind not in _SELECT_PARTS:
            raise QueryNotAllowed(f"only SELECT queries are allowed, not {node.kind}")
